import json

import pytest

from medsft import data
from medsft.config import MedsftArguments
from medsft.errors import UserError
from medsft.models import load_tokenizer

from conftest import PUBMEDQA, needs_pubmedqa


@pytest.fixture
def tokenizer(tiny_model):
    return load_tokenizer(str(tiny_model))


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
    by_ids = {tuple(r["input_ids"]): r for r in prepared.train_dataset}
    for ids, labels, n in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), lengths):
        row = by_ids[tuple(ids[:n])]
        expected = [t if m else -100 for t, m in zip(row["input_ids"], row["completion_mask"])]
        assert labels[:n] == expected
        assert labels[n - 1] == tok.eos_token_id  # EOS is trained
        assert all(x == -100 for x in labels[n:])  # padding is not
        completion = tok.decode([t for t in labels[:n] if t != -100], skip_special_tokens=True)
        assert completion.strip() in ("yes", "no", "maybe")


def test_truncation_keeps_answer_and_counts_dropped(tokenizer):
    args = MedsftArguments(task="pubmedqa", include_long_answer=True)
    long_context = " ".join(["fever"] * 400)
    rows = [
        {"id": "short", "question": "Fever?", "contexts": ["Temp 39 C."], "labels": [], "long_answer": "Yes.", "final_decision": "yes"},
        {"id": "long", "question": "Fever?", "contexts": [long_context], "labels": [], "long_answer": "Yes.", "final_decision": "no"},
        {"id": "huge", "question": "Fever?", "contexts": ["x"], "labels": [], "long_answer": long_context, "final_decision": "maybe"},
    ]
    ds, stats = data.encode(rows, args, tokenizer, max_length=64)
    assert (stats.kept, stats.truncated, stats.dropped) == (2, 1, 1)
    long = ds[1]
    assert len(long["input_ids"]) == 64
    completion = [t for t, m in zip(long["input_ids"], long["completion_mask"]) if m]
    expected = tokenizer(" no. Yes.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert completion == expected
    assert tokenizer.decode(long["input_ids"]).rstrip("<|endoftext|>").endswith("Answer (yes, no or maybe): no. Yes.")
    assert all(1 in r["completion_mask"] for r in ds)  # never a row with every label masked


def test_max_length_too_small_for_any_answer_is_a_user_error(write_recipe):
    from medsft import train
    from medsft.config import parse_recipe

    recipe = parse_recipe([str(write_recipe(max_length=2))])
    with pytest.raises(UserError, match="max_length 2 is too small to hold any answer"):
        train.prepare(recipe)


def test_synthetic_is_deterministic_and_balanced():
    a = data.load_rows(MedsftArguments(synthetic_size=300), seed=3)
    b = data.load_rows(MedsftArguments(synthetic_size=300), seed=3)
    assert a == b and len(a) == 300
    counts = data.label_counts(a)
    assert counts["yes"] > counts["no"] > counts["maybe"] > 0


@needs_pubmedqa
def test_official_split():
    args = MedsftArguments(dataset_name=str(PUBMEDQA))
    rows = data.load_rows(args, seed=0)
    parts = data.split(rows, args, seed=0)
    assert len(parts["test"]) == 500 and len(parts["eval"]) == 50 and len(parts["train"]) == 450
    assert data.label_counts(parts["test"]) == {"yes": 276, "no": 169, "maybe": 55}
    test_ids = set(json.loads((PUBMEDQA.parent / "test_ground_truth.json").read_text()))
    assert {r["id"] for r in parts["test"]} == test_ids
    assert not {r["id"] for r in parts["train"]} & test_ids


def test_stratified_sample_keeps_proportions():
    rows = [{"final_decision": label} for label in ["yes"] * 276 + ["no"] * 169 + ["maybe"] * 55]  # ordered by label
    sample = data.stratified_sample(rows, 100, seed=0)
    assert data.label_counts(sample) == {"yes": 55, "no": 34, "maybe": 11}


def test_malformed_rows_are_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"question": "q", "contexts": ["c"], "final_decision": "yes"}\n{"question": "q"}\n')
    with pytest.raises(UserError) as e:
        data.load_rows(MedsftArguments(dataset_name=str(path)), seed=0)
    assert str(e.value) == f"dataset {path} row 2 has no field 'contexts', which the pubmedqa task needs"
    path.write_text('{"question": "q", "contexts": ["c"], "final_decision": "yes"}\n{oops\n')
    with pytest.raises(UserError, match=r"line 2 is not valid JSON"):
        data.load_rows(MedsftArguments(dataset_name=str(path)), seed=0)


def test_csv_and_folder_sources(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.csv").write_text('id,text\n1,"IMPRESSION: fine."\n2,"IMPRESSION: not fine."\n')
    rows = data.load_rows(MedsftArguments(task="report", dataset_name=str(tmp_path / "notes")), seed=0)
    assert [r["text"] for r in rows] == ["IMPRESSION: fine.", "IMPRESSION: not fine."]


def test_truncate_left_keeps_bos_and_the_end():
    assert data.truncate_left([1, 5, 6, 7, 8], 3, bos_token_id=1) == [1, 7, 8]
    assert data.truncate_left([5, 6, 7, 8], 3, bos_token_id=1) == [6, 7, 8]
    assert data.truncate_left([5, 6], 3, bos_token_id=1) == [5, 6]
