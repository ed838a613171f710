import json

import pytest

from medsft import data, encode, splits
from medsft.arguments import DataSpec
from medsft.errors import UserError
from medsft.models import load_tokenizer
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
    from medsft import train
    from medsft.config import parse_recipe

    recipe = parse_recipe([str(write_recipe(per_device_train_batch_size=3))])
    prepared = train.prepare(recipe)
    tok = prepared.tokenizer
    assert tok.pad_token_id == tok.eos_token_id
    trainer = train.build_trainer(recipe, prepared)
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
    ds, stats = encode.encode([task.example(r) for r in rows], encode.Encoder(tokenizer, 64))
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
    assert encode.Encoder(tokenizer, fits)(task.example(row))[1] == "truncated"
    assert encode.Encoder(tokenizer, cue)(task.example(row)) == ([], "dropped")


def test_max_length_too_small_for_any_answer_is_a_user_error(write_recipe):
    from medsft import train
    from medsft.config import parse_recipe

    recipe = parse_recipe([str(write_recipe(max_length=4))])
    with pytest.raises(UserError, match="max_length 4 is too small to hold any answer"):
        train.prepare(recipe)


def test_long_texts_are_split_not_cut(tokenizer):
    task = get(DataSpec(task="text"))
    text = " ".join(f"word{i}" for i in range(300))
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    ds, stats = encode.encode([task.example({"text": text, "id": "0"}), task.example({"text": "short", "id": "1"})],
                              encode.Encoder(tokenizer, 100))
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


def _hub_rows() -> list[dict]:
    """1000 rows in the hub schema (qiaojin/PubMedQA, pqa_labeled) whose pubids are the official ids."""
    from medsft.tasks.pubmedqa import official_ids

    ids = official_ids()["test"] + [i for fold in official_ids()["folds"] for i in fold]
    return [{"pubid": int(i), "question": f"Q{i}?", "context": {"contexts": ["c"], "labels": ["L"], "meshes": []},
             "long_answer": "a", "final_decision": "yes"} for i in ids[::-1]]


def _hub_copy(tmp_path, monkeypatch) -> list[str]:
    """The hub copy (one 'train' split of 1000 items) served by a faked load_dataset and saved as a local folder in
    the hub layout; the two names that read it."""
    import datasets

    hub = datasets.DatasetDict({"train": datasets.Dataset.from_list(_hub_rows())})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, **kw: hub)
    folder = tmp_path / "PubMedQA" / "pqa_labeled"
    folder.mkdir(parents=True)
    hub["train"].to_parquet(folder / "train-00000-of-00001.parquet")
    return ["qiaojin/PubMedQA", str(tmp_path / "PubMedQA")]


@needs_pubmedqa
def test_hub_copy_gets_the_official_split_and_honours_fold(tmp_path, monkeypatch):
    """The official split in the local data folder (pubmedqa/splits.json) gives the hub copy the official test ids
    and the fold's dev ids, from the hub (load_dataset) and from a local folder in the hub layout alike."""
    from medsft.tasks.pubmedqa import official_ids

    official = official_ids()
    for name in _hub_copy(tmp_path, monkeypatch):
        for fold in (0, 7):
            parts = load(task="pubmedqa", dataset_name=name, dataset_config="pqa_labeled", fold=fold).parts
            assert sorted(r["id"] for r in parts["test"]) == sorted(official["test"])
            assert sorted(r["id"] for r in parts["eval"]) == sorted(official["folds"][fold])
            assert len(parts["train"]) == 450


@needs_pubmedqa
def test_without_the_official_split_the_hub_copy_is_split_by_seed_and_says_so(tmp_path, monkeypatch, capsys):
    names = _hub_copy(tmp_path, monkeypatch)
    monkeypatch.setenv("MEDSFT_DATA", str(tmp_path))  # a data folder without pubmedqa/splits.json
    capsys.readouterr()  # the parquet writer's progress
    parts = load(task="pubmedqa", dataset_name=names[0], dataset_config="pqa_labeled").parts
    assert [len(parts[role]) for role in ("train", "eval", "test")] == [450, 50, 500]  # PubMedQA's proportions
    from medsft.tasks.pubmedqa import official_ids

    monkeypatch.delenv("MEDSFT_DATA")
    assert sorted(r["id"] for r in parts["test"]) != sorted(official_ids()["test"])
    assert capsys.readouterr().err.strip().splitlines() == [
        "medsft: PubMedQA's official split (pubmedqa/splits.json under $MEDSFT_DATA or ../shared/data) was not found; "
        "rows without a split get a seeded one (split_seed), not the official 500 test items"]


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
    assert encode.fit_prompt([1, 5, 6, 7, 8], 1, 3, bos_token_id=1) == [1, 7, 8]
    assert encode.fit_prompt([5, 6, 7, 8], 1, 3, bos_token_id=1) == [6, 7, 8]
    assert encode.fit_prompt([5, 6], 1, 3, bos_token_id=1) == [5, 6]
    assert encode.fit_prompt([1, 5, 6, 7, 8], 3, 3, bos_token_id=1) is None  # the protected end does not fit
