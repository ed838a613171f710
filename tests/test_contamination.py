"""Contamination: test items found in the training rows by how much of each item shared word sequences cover (not by
one shared sequence), whatever the copy's case, whitespace, option order and letters, or a dropped first sentence;
exam boilerplate is not contamination; `decontaminate` removes exactly the rows behind contaminated items; the report,
eval_results.json and the preview say what was found."""

import json
import random
import re

import pytest

from conftest import SHARED, write_jsonl
from medsft.__main__ import main
from medsft.evaluation import ngram_coverage

MCQ = SHARED / "mcq"
needs_mcq = pytest.mark.skipif(not (MCQ / "medqa.jsonl").is_file(), reason=f"needs the MCQ data at {MCQ}")


def mcq_text(row, letters="ABCD", options=None):
    options = options or list(row["options"].values())
    return row["question"] + "\n" + "\n".join(f"{k}. {v}" for k, v in zip(letters, options))


def reordered(row, rng):
    options = list(row["options"].values())
    rng.shuffle(options)
    return row["question"] + "\n" + "\n".join(f"({k}) {v}" for k, v in zip("wxyz", options))


def lowered(row, rng):
    return re.sub(r"\s+", lambda m: rng.choice(["  ", "\t", "\n "]), mcq_text(row).lower())


def first_sentence_dropped(row, rng):
    rest = re.split(r"(?<=\.)\s+", row["question"], maxsplit=1)[-1]
    return mcq_text({**row, "question": rest})


COPIES = {"verbatim": lambda row, rng: mcq_text(row), "options reordered and relabelled": reordered,
          "lower-cased, whitespace changed": lowered, "first sentence dropped": first_sentence_dropped}


def note(rng, words=60):
    vocabulary = [f"w{i}" for i in range(3000)]
    return " ".join(rng.choice(vocabulary) for _ in range(words))


def test_coverage_not_one_shared_sequence_makes_an_item_contaminated():
    rng = random.Random(0)
    boilerplate = "which of the following is the most likely cause of this patient's condition today"
    items = [f"{note(rng, 40)}. {boilerplate}?" for _ in range(20)]
    training = [(f"row{i}", f"{note(rng, 50)} {boilerplate}") for i in range(200)]
    training.append(("copy", items[3].upper().replace(" ", "\n")))
    found = ngram_coverage.check(items, training, ngram=13, threshold=0.5)
    assert found.contaminated == [3]  # the boilerplate covers a quarter of every item, the copy all of item 3
    assert found.share[3] == 1.0 and all(0.2 < s < 0.5 for i, s in enumerate(found.share) if i != 3)
    assert found.rows == {3: ["copy"]}  # the rows sharing only the boilerplate are not behind it
    assert found.training_rows == 201


def test_an_item_split_over_two_rows_is_found_and_both_rows_are_behind_it():
    rng = random.Random(1)
    item = note(rng, 80)
    words = item.split()
    training = [("first half", " ".join(words[:40])), ("second half", " ".join(words[40:])), ("other", note(rng, 80))]
    found = ngram_coverage.check([item], training, ngram=8, threshold=0.5)
    assert found.contaminated == [0] and sorted(found.rows[0]) == ["first half", "second half"]


def test_items_shorter_than_a_sequence_are_counted_unchecked():
    found = ngram_coverage.check(["too short to check", "w1 w2 w3 w4 w5 w6 w7 w8 w9"], [("r", "too short to check")], ngram=8)
    assert found.unchecked == [0] and found.contaminated == []


@needs_mcq
def test_medqa_test_against_medmcqa_and_medical_mmlu_and_planted_copies():
    load = lambda name: [json.loads(line) for line in (MCQ / name).read_text().splitlines()]  # noqa: E731
    medqa, others = load("medqa.jsonl"), load("medmcqa.jsonl") + load("mmlu.jsonl")
    items = [mcq_text(r) for r in medqa]
    training = [(f"other/{i}", f"Question: {mcq_text(r)}\nAnswer: {r['answer_idx']}") for i, r in enumerate(others)]
    found = ngram_coverage.check(items, training)
    assert len(found.contaminated) <= 0.01 * len(items)
    rng = random.Random(0)
    planted = rng.sample(range(len(items)), 100)
    for name, copy in COPIES.items():
        rows = training + [(f"planted/{i}", f"Q: {copy(medqa[i], rng)}\nAnswer: X") for i in planted]
        found = ngram_coverage.check(items, rows)
        hit = [i for i in planted if i in found.contaminated]
        assert len(hit) >= 95, name
        behind = {key for keys in found.rows.values() for key in keys}
        assert behind <= {f"planted/{i}" for i in planted}, name  # only planted rows are ever behind an item
        assert all(f"planted/{i}" in found.rows[i] for i in hit), name


def mcq_rows(n, rng, offset=0):
    out = []
    for i in range(n):
        out.append({"id": f"q{offset + i}", "question": f"Question {offset + i}: " + note(rng, 30),
                    "options": {k: note(rng, 3) for k in "ABCD"}, "answer_idx": rng.choice("ABCD")})
    return out


@pytest.fixture
def planted_exam(tmp_path):
    rng = random.Random(2)
    test = mcq_rows(12, rng, offset=100)
    train = mcq_rows(40, rng)
    planted = [{**row, "id": f"copy-of-{row['id']}", "question": row["question"].lower()} for row in test[:3]]
    write_jsonl(tmp_path / "train.jsonl", train + planted)
    write_jsonl(tmp_path / "test.jsonl", test)
    return tmp_path, sorted(r["id"] for r in planted)


def exam_recipe(write_recipe, folder, **keys):  # the dataset is named after its training file: "train"
    return write_recipe(task="multiple_choice", dataset_name=None, synthetic_size=600,
                        data_files={"train": str(folder / "train.jsonl"), "test": str(folder / "test.jsonl")},
                        eval_split_size=0, max_steps=2, sample_count=0, **keys)


def test_decontaminate_removes_exactly_the_planted_rows_and_the_run_says_so(write_recipe, planted_exam, tmp_path, capsys):
    folder, planted = planted_exam
    assert main([str(exam_recipe(write_recipe, folder, decontaminate=True))]) == 0
    out = capsys.readouterr().out
    assert "decontaminate: removed 3 training rows of train behind contaminated test items" in " ".join(out.split())
    run = tmp_path / "out"
    assert json.loads((run / "decontaminated.json").read_text()) == {"train": {"removed": 3, "ids": planted}}
    trained = json.loads((run / "split_ids.json").read_text())["train"]["train"]
    assert len(trained) == 40 and not set(planted) & set(trained)
    [evaluation] = json.loads((run / "eval_results.json").read_text())["evaluations"]
    assert evaluation["contamination"]["ids"] == []  # nothing left behind any item


def test_the_report_scores_the_clean_items_apart(write_recipe, planted_exam, tmp_path, capsys):
    folder, planted = planted_exam
    assert main([str(exam_recipe(write_recipe, folder))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "contamination: train: 3 of 12 test items (25.0%) contaminated" in out
    assert "on the 9 clean items, accuracy: base" in out
    # the check and the weights' digest show their progress, as the scoring does
    assert "contamination check" in out and "43/43 training rows" in out and "weights' digest" in out
    [evaluation] = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"]
    record = evaluation["contamination"]
    assert sorted(record["ids"]) == ["q100", "q101", "q102"] and record["share"] == 0.25
    assert record["rows"]["q100"] == ["train/copy-of-q100"]
    assert record["threshold"] == 0.5 and record["ngram"] == 13 and record["checked_against"] == ["train (train)"]
    clean = evaluation["clean"]
    assert clean["n"] == 9 and set(clean["models"]) == {"base", "tuned"} and "tuned_vs_base" in clean["tests"]
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    right = sum(p["tuned_prediction"] == p["gold"] for p in predictions if p["id"] not in record["ids"])
    assert clean["models"]["tuned"]["accuracy"] == pytest.approx(right / 9)


def test_every_item_contaminated_leaves_nothing_clean_and_the_run_still_reports(write_recipe, tmp_path, capsys):
    """The synthetic notes come from a few templates: with a low threshold every test note is a near-copy."""
    assert main([str(write_recipe(contamination_threshold=0.05, max_test_samples=8, sample_count=0))]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "8 of 8 test items (100.0%) contaminated" in out and "every test item is contaminated" in out
    [evaluation] = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"]
    assert evaluation["clean"] == {"n": 0, "models": {}, "tests": {}}


def test_the_preview_prints_the_check_before_anything_trains(write_recipe, planted_exam, tmp_path, capsys):
    folder, _ = planted_exam
    assert main(["preview", str(exam_recipe(write_recipe, folder, contamination_threshold=0.9)), "-n", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "contamination: train: 3 of 12 test items (25.0%) contaminated: at least 90% of an item's words" in out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, value, message", [
    ("contamination_ngram", 2, "contamination_ngram must be a whole number of at least 4, got 2"),
    ("contamination_threshold", 0, "contamination_threshold must be a number above 0, at most 1, got 0.0"),
])
def test_out_of_range_settings_are_refused(write_recipe, capsys, key, value, message):
    path = write_recipe(**{key: value})
    assert main([str(path)]) == 2
    assert capsys.readouterr().err.strip() == "medsft: error: " + message


def test_the_check_is_kept_with_the_prepared_data_and_computed_again_only_when_its_inputs_change(
        write_recipe, planted_exam, monkeypatch, capsys):
    """A second preview (or train, or eval) of the same data reads the check back from the data cache; another
    threshold, or a changed training file, computes it again; the answer is the same either way."""
    from medsft.evaluation import ngram_coverage

    calls = []
    measure = ngram_coverage.check
    monkeypatch.setattr(ngram_coverage, "check", lambda *a, **k: calls.append(1) or measure(*a, **k))
    folder, _ = planted_exam
    recipe = exam_recipe(write_recipe, folder)

    def preview(*argv):
        capsys.readouterr()
        assert main(["preview", str(recipe), "-n", "1", *argv]) == 0
        return [line for line in " ".join(capsys.readouterr().out.split()).split("contamination:")[1:]]

    first = preview()
    assert len(calls) == 1 and "3 of 12 test items (25.0%) contaminated" in first[0]
    assert preview() == first and len(calls) == 1  # read back
    assert "3 of 12" in preview("--contamination_threshold", "0.9")[0] and len(calls) == 2
    rows = (folder / "train.jsonl").read_text().splitlines()
    (folder / "train.jsonl").write_text("\n".join(rows[:-1]) + "\n")  # one planted copy gone
    assert "2 of 12 test items" in preview()[0] and len(calls) == 3
