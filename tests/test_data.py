import json

import pytest

from medsft.data import datasets as data
from medsft.data import encoding, splits, truncation
from medsft.training import prepare
from medsft.recipe.keys import DataSpec
from medsft.errors import UserError
from medsft.models.tokenizer import load_tokenizer
from medsft.tasks import get, stratified_sample

from conftest import PUBMEDQA, needs_pubmedqa, write_jsonl


@pytest.fixture
def tokenizer(tiny_model):
    return load_tokenizer(str(tiny_model))


def load(**keys):
    spec = DataSpec(**keys)
    spec.name = spec.name or "d"
    return data.load([spec])[0]


def test_label_mask_is_exact_through_trls_collator(write_recipe, tiny_model):
    """Prompt tokens get -100; every completion token and the final EOS keep their ids, padding is masked,
    although pad == eos for this tokenizer."""
    from medsft.training import fit
    from medsft.recipe.parser import parse_recipe

    recipe = parse_recipe([str(write_recipe(per_device_train_batch_size=3))])
    prepared = prepare.prepare(recipe)
    tok = prepared.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    trainer = fit.build_trainer(recipe, prepared)
    batch = next(iter(trainer.get_train_dataloader()))
    lengths = batch["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) > 1, "need rows of different lengths to see padding"
    task = prepared.datasets[0].task
    expected = {}
    for row in prepared.datasets[0].parts["train"]:
        example = task.example(row)
        prompt = tok(example.prompt)["input_ids"]
        completion = tok(example.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        expected[tuple(prompt + completion)] = [-100] * len(prompt) + completion
    for ids, labels, n in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), lengths):
        assert labels[:n] == expected[tuple(ids[:n])]
        assert labels[n - 1] == tok.eos_token_id  # EOS is trained
        assert all(x == -100 for x in labels[n:])  # padding is not
        completion = tok.decode([t for t in labels[:n] if t != -100], skip_special_tokens=True)
        assert completion.strip() in ("yes", "no", "maybe")


def test_truncation_keeps_answer_and_question_and_counts_dropped(tokenizer):
    task = get(DataSpec(task="pubmedqa", include_long_answer=True))
    long_context = " ".join(["fever"] * 400)
    rows = [
        {"id": "short", "question": "Fever?", "contexts": ["Temp 39 C."], "labels": [], "long_answer": "Yes.", "final_decision": "yes"},
        {"id": "long", "question": "Fever?", "contexts": [long_context], "labels": [], "long_answer": "Yes.", "final_decision": "no"},
        {"id": "huge", "question": "Fever?", "contexts": ["x"], "labels": [], "long_answer": long_context, "final_decision": "maybe"},
    ]
    ds, stats = encoding.encode([task.example(r) for r in rows], encoding.Encoder(tokenizer, 64))
    assert (stats.kept, stats.truncated, stats.dropped) == (2, 1, 1)
    long = ds[1]
    assert len(long["input_ids"]) == 64
    completion = [t for t in long["labels"] if t != -100]
    assert completion == tokenizer(" no. Yes.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(long["input_ids"]).endswith("Question: Fever?\nAnswer (yes, no or maybe): no. Yes.<|endoftext|>")


def test_a_row_whose_question_cannot_fit_is_dropped_not_cut(tokenizer):
    """max_length 4 used to keep one token of prompt: the question was gone but the row trained."""
    task = get(DataSpec(task="pubmedqa"))
    row = {"id": "1", "question": "Is the patient febrile today?", "contexts": ["Temp 39 C."], "labels": [],
           "long_answer": "", "final_decision": "yes"}
    cue = len(tokenizer("\n\nQuestion: Is the patient febrile today?\nAnswer (yes, no or maybe):", add_special_tokens=False)["input_ids"])
    fits = cue + 2 + 1  # the cue, " yes", EOS, and one token of spare room
    assert encoding.Encoder(tokenizer, fits)(task.example(row))[1] == "truncated"
    assert encoding.Encoder(tokenizer, cue)(task.example(row)) == ([], "dropped")


def test_max_length_too_small_for_any_answer_is_a_user_error(write_recipe):
    from medsft.recipe.parser import parse_recipe

    recipe = parse_recipe([str(write_recipe(max_length=4))])
    with pytest.raises(UserError, match="max_length 4 is too small to hold any answer"):
        prepare.prepare(recipe)


def test_long_texts_are_split_not_cut(tokenizer):
    task = get(DataSpec(task="text"))
    text = " ".join(f"word{i}" for i in range(300))
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    ds, stats = encoding.encode([task.example({"text": text, "id": "0"}), task.example({"text": "short", "id": "1"})],
                              encoding.Encoder(tokenizer, 100))
    assert (stats.kept, stats.split, stats.pieces) == (2, 1, -(-len(ids) // 100))
    pieces = [r["input_ids"] for r in ds][: stats.pieces]
    assert sum(pieces, []) == ids  # every token kept, in order
    assert all(len(p) <= 100 for p in pieces) and all(r["labels"] == r["input_ids"] for r in ds)


def test_synthetic_is_deterministic_and_balanced():
    a, b = load(task="pubmedqa", dataset_name="synthetic", synthetic_size=300), load(task="pubmedqa", dataset_name="synthetic", synthetic_size=300)
    assert a.parts == b.parts and sum(map(len, a.parts.values())) == 300
    labels = [r["final_decision"] for r in a.parts["train"]]
    assert labels.count("yes") > labels.count("no") > labels.count("maybe") > 0


@needs_pubmedqa
def test_official_split_from_the_original_file_and_its_folder():
    test_ids = set(json.loads((PUBMEDQA.parent / "test_ground_truth.json").read_text()))
    folds = json.loads((PUBMEDQA.parent / "splits.json").read_text())["folds"]
    for name in (str(PUBMEDQA), str(PUBMEDQA.parent)):  # the folder holds splits.json and a label map beside the data
        parts = load(task="pubmedqa", dataset_name=name, fold=3).parts
        assert {r["id"] for r in parts["test"]} == test_ids
        assert sorted(r["id"] for r in parts["eval"]) == sorted(folds[3])
        assert len(parts["train"]) == 450 and not {r["id"] for r in parts["train"]} & test_ids
        labels = [r["final_decision"] for r in parts["test"]]
        assert (labels.count("yes"), labels.count("no"), labels.count("maybe")) == (276, 169, 55)


def _official() -> dict:
    """The release's own splits.json (the ground truth the shipped copy must equal)."""
    return json.loads((PUBMEDQA.parent / "splits.json").read_text())


def hub_rows(official: dict) -> list[dict]:
    """1000 rows in the hub schema (qiaojin/PubMedQA, pqa_labeled) whose pubids are the official ids."""
    ids = official["test"] + [i for fold in official["folds"] for i in fold]
    return [{"pubid": int(i), "question": f"Q{i}?", "context": {"contexts": ["c"], "labels": ["L"], "meshes": []},
             "long_answer": "a", "final_decision": "yes"} for i in ids[::-1]]


def _hub_copy(tmp_path, monkeypatch) -> list[str]:
    """The hub copy (one 'train' split of 1000 items) served by a faked load_dataset and saved as a local folder in
    the hub layout; the two names that read it."""
    import datasets

    hub = datasets.DatasetDict({"train": datasets.Dataset.from_list(hub_rows(_official()))})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: hub)
    folder = tmp_path / "PubMedQA" / "pqa_labeled"
    folder.mkdir(parents=True)
    hub["train"].to_parquet(folder / "train-00000-of-00001.parquet")
    return ["qiaojin/PubMedQA", str(tmp_path / "PubMedQA")]


@needs_pubmedqa
def test_the_shipped_split_is_the_releases():
    from medsft.tasks.pubmedqa import official_ids

    shipped, official = official_ids(), _official()
    assert shipped["test"] == official["test"] and shipped["folds"] == official["folds"]
    assert "MIT" in shipped["license"] and "pubmedqa" in shipped["source"]


@needs_pubmedqa
def test_every_copy_of_pubmedqa_gets_the_official_split_and_honours_fold(tmp_path, monkeypatch):
    """With no data folder anywhere (MEDSFT_DATA unset, no splits.json beside the data), the split shipped in the
    package gives the hub copy, a parquet folder in the hub layout and the original-schema file the official test
    ids and the fold's dev ids."""
    monkeypatch.delenv("MEDSFT_DATA", raising=False)
    official = _official()
    original = tmp_path / "alone" / "ori_pqal.json"  # the original release's schema, without its splits.json
    original.parent.mkdir()
    original.write_text(PUBMEDQA.read_text())
    for name, config in [*((n, "pqa_labeled") for n in _hub_copy(tmp_path, monkeypatch)), (str(original), None)]:
        for fold in (0, 7):
            parts = load(task="pubmedqa", dataset_name=name, dataset_config=config, fold=fold).parts
            assert sorted(r["id"] for r in parts["test"]) == sorted(official["test"]), (name, fold)
            assert sorted(r["id"] for r in parts["eval"]) == sorted(official["folds"][fold]), (name, fold)
            assert len(parts["train"]) == 450


@needs_pubmedqa
def test_a_split_file_the_user_gives_wins_over_the_shipped_one(tmp_path, monkeypatch):
    _hub_copy(tmp_path, monkeypatch)
    official = _official()
    mine = {"test": official["folds"][0], "folds": [official["folds"][1]]}
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    parts = load(task="pubmedqa", dataset_name="qiaojin/PubMedQA", split_file=str(tmp_path / "mine.json")).parts
    assert sorted(r["id"] for r in parts["test"]) == sorted(official["folds"][0])
    assert sorted(r["id"] for r in parts["eval"]) == sorted(official["folds"][1])
    assert len(parts["train"]) == 900


INSTALLED_SPLIT = """
import json, sys
from pathlib import Path

import datasets, medsft
from medsft.data import datasets as data
from medsft.recipe.keys import DataSpec

rows, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
folder = out / "PubMedQA" / "pqa_labeled"
folder.mkdir(parents=True)
datasets.Dataset.from_list(rows).to_parquet(folder / "train-00000-of-00001.parquet")
parts = data.load([DataSpec(task="pubmedqa", dataset_name=str(out / "PubMedQA"), dataset_config="pqa_labeled", name="p")])[0].parts
shared = [p / "shared" for p in Path(medsft.__file__).resolve().parents if (p / "shared").exists()]
print(json.dumps({"file": medsft.__file__, "shared": [str(p) for p in shared],
                  **{role: [r["id"] for r in parts[role]] for role in ("train", "eval", "test")}}))
"""


@pytest.mark.slow
@needs_pubmedqa
def test_an_installed_package_alone_resolves_the_official_split(tmp_path):
    """medsft installed into a fresh folder outside the checkout, MEDSFT_DATA unset, run from elsewhere: hub-layout
    rows get exactly the official 500 test ids and fold 0's 50 dev ids."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--no-compile", "--target", str(site), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr
    official = _official()
    (tmp_path / "rows.json").write_text(json.dumps(hub_rows(official)))
    env = {k: v for k, v in os.environ.items() if k not in ("MEDSFT_DATA", "PYTHONPATH")}
    run = subprocess.run([sys.executable, "-c", INSTALLED_SPLIT, str(tmp_path / "rows.json"), str(tmp_path / "work")],
                         capture_output=True, text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(site)}, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(site)) and got["shared"] == []
    assert sorted(got["test"]) == sorted(official["test"]) and sorted(got["eval"]) == sorted(official["folds"][0])
    assert len(got["train"]) == 450


def test_a_datasets_own_splits_are_kept(tmp_path):
    folder = tmp_path / "qa"
    folder.mkdir()
    for split, n in (("train", 30), ("validation", 5), ("test", 7)):
        write_jsonl(folder / f"{split}.jsonl", [{"prompt": f"{split} {i}?", "completion": " ok"} for i in range(n)])
    parts = load(task="prompt_completion", dataset_name=str(folder)).parts
    assert [len(parts[r]) for r in ("train", "eval", "test")] == [30, 5, 7]
    assert all(r["prompt"].startswith("test") for r in parts["test"])
    assert all(r["prompt"].startswith("validation") for r in parts["eval"])
    mapping = {"train": str(folder / "train.jsonl"), "test": str(folder / "test.jsonl")}
    parts = load(task="prompt_completion", data_files=mapping, eval_split_size=3).parts  # no dev split: carved from train
    assert [len(parts[r]) for r in ("train", "eval", "test")] == [27, 3, 7]
    assert all(r["prompt"].startswith("test") for r in parts["test"])


def test_a_folder_with_splits_json_loads_and_follows_it(tmp_path):
    write_jsonl(tmp_path / "items.jsonl", [{"id": str(i), "prompt": f"q{i}", "completion": " a"} for i in range(10)])
    (tmp_path / "splits.json").write_text(json.dumps({"train": [], "eval": ["1"], "test": ["8", "9"]}))
    parts = load(task="prompt_completion", dataset_name=str(tmp_path)).parts
    assert [r["id"] for r in parts["test"]] == ["8", "9"] and [r["id"] for r in parts["eval"]] == ["1"]
    assert len(parts["train"]) == 7


def test_seeded_split_uses_split_seed_never_the_training_seed():
    base = dict(task="prompt_completion", dataset_name="x")
    rows = {"train": [{"id": str(i)} for i in range(100)]}
    task = get(DataSpec(**base))
    a = splits.assign(task, DataSpec(**base, split_seed=1), rows)
    b = splits.assign(task, DataSpec(**base, split_seed=1), rows)
    c = splits.assign(task, DataSpec(**base, split_seed=2), rows)
    assert a == b and a["test"] != c["test"] and len(a["test"]) == 10 and len(a["eval"]) == 5


def test_stratified_sample_keeps_proportions():
    rows = [{"final_decision": label} for label in ["yes"] * 276 + ["no"] * 169 + ["maybe"] * 55]  # ordered by label
    sample = stratified_sample(rows, 100, seed=0, label=lambda r: r["final_decision"])
    labels = [r["final_decision"] for r in sample]
    assert (labels.count("yes"), labels.count("no"), labels.count("maybe")) == (55, 34, 11)


def test_malformed_rows_are_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "contexts": ["c"], "final_decision": "yes"}, {"question": "q"}])
    with pytest.raises(UserError) as e:
        load(task="pubmedqa", dataset_name=str(path))
    assert str(e.value) == f"dataset {path} row 2 has no field 'contexts', which the pubmedqa task needs"
    path.write_text('{"question": "q", "contexts": ["c"], "final_decision": "yes"}\n{oops\n')
    with pytest.raises(UserError, match=r"line 2 is not valid JSON"):
        load(task="pubmedqa", dataset_name=str(path))


def test_csv_and_folder_sources(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.csv").write_text('id,text\n1,"IMPRESSION: fine."\n2,"IMPRESSION: not fine."\n')
    parts = load(task="report", dataset_name=str(tmp_path / "notes"), eval_split_size=0, test_split_size=0).parts
    assert [r["text"] for r in parts["train"]] == ["IMPRESSION: fine.", "IMPRESSION: not fine."]


def test_fit_prompt_keeps_bos_and_the_end():
    assert truncation.fit_prompt([1, 5, 6, 7, 8], 1, 3, bos_token_id=1) == [1, 7, 8]
    assert truncation.fit_prompt([5, 6, 7, 8], 1, 3, bos_token_id=1) == [6, 7, 8]
    assert truncation.fit_prompt([5, 6], 1, 3, bos_token_id=1) == [5, 6]
    assert truncation.fit_prompt([1, 5, 6, 7, 8], 3, 3, bos_token_id=1) is None  # the protected end does not fit


def test_files_as_common_tools_write_them_train_as_the_same_file(write_recipe, tmp_path):
    """A UTF-8 byte-order mark, Windows line ends and blank lines between records (JSON Lines, JSON, CSV, and the
    recipe itself) change nothing: the same ids in every role, the same tokenized rows."""
    import csv

    from medsft.recipe.parser import parse_recipe

    rows = [{"prompt": f"Note {i}: fever {'yes' if i % 3 else 'no'}. Fébrile?\nAnswer:", "completion": " yes" if i % 3 else " no"}
            for i in range(40)]
    plain = write_jsonl(tmp_path / "plain.jsonl", rows)
    bom = b"\xef\xbb\xbf"
    (tmp_path / "windows.jsonl").write_bytes(bom + b"\r\n\r\n".join(json.dumps(r).encode() for r in rows) + b"\r\n")
    (tmp_path / "windows.json").write_bytes(bom + json.dumps(rows, indent=1).replace("\n", "\r\n").encode())
    for name, end, codec in (("plain.csv", "\n", "utf-8"), ("windows.csv", "\r\n", "utf-8-sig")):  # as Excel saves it
        with open(tmp_path / name, "w", newline="", encoding=codec) as f:
            csv.DictWriter(f, ["prompt", "completion"], lineterminator=end).writerows([{"prompt": "prompt", "completion": "completion"}, *rows])

    def prepared(name: str, recipe_bom: bool = False):
        recipe = write_recipe(f"{name}.yaml", task="prompt_completion", dataset_name=str(tmp_path / name), max_length=64)
        if recipe_bom:
            recipe.write_bytes(bom + recipe.read_text().replace("\n", "\r\n").encode())
        p = prepare.prepare(parse_recipe([str(recipe)]))
        return ({role: [r["id"] for r in part] for role, part in p.datasets[0].parts.items()},
                p.train_dataset["input_ids"], p.train_dataset["labels"])

    reference = prepared(plain.name)
    assert prepared("windows.jsonl", recipe_bom=True) == reference
    assert prepared("windows.json") == reference
    assert prepared("windows.csv") == prepared("plain.csv") and prepared("plain.csv")[1] == reference[1]


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"text": "fièvre"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"^dataset .*latin1.jsonl is not UTF-8 text \(byte \d+\); save it as UTF-8$"):
        load(task="text", dataset_name=str(path))


def test_max_test_samples_scores_exactly_that_many_with_every_label(tmp_path):
    rows = [{"question": f"Q{i}?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "ABCD"[i % 4]}
            for i in range(40)]
    path = write_jsonl(tmp_path / "mcq.jsonl", rows)
    test = load(task="multiple_choice", data_files={"test": str(path), "train": str(path)}, max_test_samples=10).parts["test"]
    assert len(test) == 10 and {r["answer"] for r in test} == {"A", "B", "C", "D"}


def test_mixture_weights_draw_with_split_seed_not_the_training_seed(write_recipe, tmp_path):
    from medsft.recipe.parser import parse_recipe

    rows = [{"prompt": f"Q{i}?\nAnswer:", "completion": f" {i}"} for i in range(40)]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    recipe = write_recipe(dataset_name=None, dataset_mixture=[{"path": str(path), "task": "prompt_completion", "weight": 0.5}])

    def trained(*keys):
        return sorted(map(tuple, prepare.prepare(parse_recipe([str(recipe), *keys])).train_dataset["input_ids"]))

    first = trained("--seed", "1")
    assert trained("--seed", "2") == first
    assert trained("--seed", "1", "--split_seed", "5") != first
