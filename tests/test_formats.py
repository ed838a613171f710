"""A user's own data with no Python: TRL's formats (text, prompt-completion, messages), a declared template and a
multiple-choice exam, each trained by the real CLI, with its loss mask checked exactly through TRL's collator."""

import json

import pytest

from medsft.data import templates
from medsft.recipe.parser import parse_recipe
from medsft.training import fit, prepare

from conftest import ROOT, run_cli, write_jsonl

DRUGS = ["aspirin", "heparin", "insulin", "morphine"]


def batches_of(recipe_path, *overrides):
    """(prepared, every batch of one epoch) as TRL's collator builds them for the trainer."""
    recipe = parse_recipe([str(recipe_path), *overrides])
    prepared = prepare.prepare(recipe)
    trainer = fit.build_trainer(recipe, prepared)
    return prepared, list(trainer.get_train_dataloader())


def rows_of(batches):
    """(input ids, labels) of every unpadded row in the batches."""
    out = []
    for batch in batches:
        for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
            n = sum(mask)
            assert all(x == -100 for x in labels[n:])  # padding is never trained
            out.append((ids[:n], labels[:n]))
    return out


def trained_runs(ids, labels):
    """The contiguous trained spans of a row, as token lists."""
    runs, current = [], []
    for t, label in zip(ids, labels):
        if label != -100:
            assert label == t
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def train_cli(recipe):
    proc = run_cli(recipe)
    assert proc.returncode == 0, proc.stderr
    return proc


pytestmark = pytest.mark.slow


def test_text_format_trains_every_token_and_splits_long_rows(write_recipe, tmp_path, tiny_model):
    notes = [{"body": " ".join(f"finding{i} normal" for i in range(k * 20))} for k in range(1, 9)]
    data = write_jsonl(tmp_path / "notes.jsonl", notes)
    recipe = write_recipe(task="text", dataset_name=str(data), dataset_text_field="body", max_length=64,
                          eval_split_size=0, test_split_size=2)
    proc = train_cli(recipe)
    assert "long texts split into" in proc.stdout
    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"][0]
    assert results["task"] == "text" and results["models"]["tuned"]["perplexity"] > 1
    prepared, batches = batches_of(recipe)
    tok = prepared.tokenizer
    rows = rows_of(batches)
    assert all(ids == labels for ids, labels in rows)  # every token, EOS included, is trained
    assert all(len(ids) <= 64 for ids, _ in rows)
    texts = [r["body"] for r in prepared.datasets[0].parts["train"]]
    expected = sorted(tuple(p) for text in texts for p in _pieces(tok(text)["input_ids"] + [tok.eos_token_id], 64))
    assert sorted(tuple(ids) for ids, _ in rows) == expected  # nothing cut: the pieces are the whole texts


def _pieces(ids, n):
    return [ids[i : i + n] for i in range(0, len(ids), n)]


def test_prompt_completion_format_masks_the_prompt(write_recipe, tmp_path):
    items = [{"prompt": f"Patient {i}: temperature {37 + i % 4} C. Fever?", "completion": " yes" if i % 4 > 1 else " no"}
             for i in range(24)]
    recipe = write_recipe(task="prompt_completion", dataset_name=str(write_jsonl(tmp_path / "qa.jsonl", items)))
    train_cli(recipe)
    prepared, batches = batches_of(recipe)
    tok = prepared.tokenizer
    expected = {}
    for item in prepared.datasets[0].parts["train"]:
        prompt = tok(item["prompt"])["input_ids"]
        completion = tok(item["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        expected[tuple(prompt + completion)] = [-100] * len(prompt) + completion
    rows = rows_of(batches)
    assert len(rows) == len(expected)
    for ids, labels in rows:
        assert labels == expected[tuple(ids)]


def test_messages_format_trains_assistant_turns_through_their_end(write_recipe, tmp_path, tiny_chat_model):
    chats = [{"messages": [{"role": "system", "content": "You are a clinician."},
                           {"role": "user", "content": f"Temperature {37 + i % 4} C?"},
                           {"role": "assistant", "content": "Febrile." if i % 4 > 1 else "Normal."},
                           {"role": "user", "content": "Plan?"},
                           {"role": "assistant", "content": f"Review in {i + 1} days."}]} for i in range(24)]
    recipe = write_recipe(task="messages", dataset_name=str(write_jsonl(tmp_path / "chats.jsonl", chats)),
                          model_name_or_path=str(tiny_chat_model))
    train_cli(recipe)
    prepared, batches = batches_of(recipe)
    tok = prepared.tokenizer
    by_text = {tok.decode(templates.chat_ids(tok, r["messages"])): r["messages"] for r in prepared.datasets[0].parts["train"]}
    rows = rows_of(batches)
    assert len(rows) == len(by_text)
    for ids, labels in rows:
        messages = by_text[tok.decode(ids)]
        runs = [tok.decode(run) for run in trained_runs(ids, labels)]
        # exactly the assistant turns, each through its end-of-turn token; system, user and headers are masked
        assert runs == [m["content"] + tok.eos_token for m in messages if m["role"] == "assistant"]
        masked = tok.decode([t for t, label in zip(ids, labels) if label == -100])
        assert "You are a clinician." in masked and "Plan?" in masked and "<|im_start|>assistant" in masked


def test_declared_template_formats_any_columns(write_recipe, tmp_path):
    items = [{"ctx": f"Heart rate {60 + 10 * i} at rest.", "q": "Tachycardic?", "a": "yes" if i > 3 else "no"} for i in range(24)]
    recipe = write_recipe(task="template", dataset_name=str(write_jsonl(tmp_path / "t.jsonl", items)),
                          prompt_template="Context: {ctx}\nQuestion: {q}\nAnswer:", completion_template=" {a}")
    train_cli(recipe)
    prepared, batches = batches_of(recipe)
    tok = prepared.tokenizer
    for ids, labels in rows_of(batches):
        n = labels.index(next(x for x in labels if x != -100))
        prompt = tok.decode(ids[:n])
        assert prompt.startswith("Context: Heart rate") and prompt.endswith("\nQuestion: Tachycardic?\nAnswer:")
        row = next(r for r in prepared.datasets[0].parts["train"] if prompt == f"Context: {r['ctx']}\nQuestion: {r['q']}\nAnswer:")
        assert labels[n:] == tok(" " + row["a"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_multiple_choice_trains_the_label_and_scores_every_option(write_recipe, tmp_path):
    items = [{"question": f"Case {i}: which drug lowers glucose?", "choices": DRUGS, "correct": "insulin" if i % 2 else "heparin"}
             for i in range(40)]
    recipe = write_recipe(task="multiple_choice", dataset_name=str(write_jsonl(tmp_path / "mcq.jsonl", items)),
                          options_field="choices", answer_field="correct", include_option_text=True, test_split_size=8)
    train_cli(recipe)
    [results] = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"]
    assert results["labels"] == ["A", "B", "C", "D"] and results["n"] == 8
    assert results["models"]["tuned"]["confusion_matrix"] and len(results["models"]["tuned"]["confusion_matrix"]) == 4
    prepared, batches = batches_of(recipe)
    tok = prepared.tokenizer
    for ids, labels in rows_of(batches):
        n = labels.index(next(x for x in labels if x != -100))
        assert tok.decode(ids[:n]).endswith("A. aspirin\nB. heparin\nC. insulin\nD. morphine\nAnswer (A, B, C or D):")
        answer = tok.decode([x for x in labels if x != -100])
        assert answer in (" B. heparin" + tok.eos_token, " C. insulin" + tok.eos_token)
        assert labels[n:] == tok(answer.removesuffix(tok.eos_token), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_mixture_trains_on_each_by_weight_and_evaluates_each_on_its_own_test_split(write_recipe, tmp_path):
    mcq = [{"question": f"Q{i}?", "options": {"A": "x", "B": "y"}, "answer_idx": "AB"[i % 2]} for i in range(40)]
    exam = [{"question": f"Exam {i}?", "options": {"A": "x", "B": "y"}, "answer_idx": "A"} for i in range(6)]
    recipe = write_recipe(dataset_name=None, dataset_mixture=[
        {"id": "synthetic", "task": "pubmedqa", "synthetic_size": 60, "weight": 1.0},
        {"path": str(write_jsonl(tmp_path / "mcq.jsonl", mcq)), "task": "multiple_choice", "weight": 0.5, "test_split_size": 10},
        {"name": "exam", "data_files": {"test": str(write_jsonl(tmp_path / "exam.jsonl", exam))}, "task": "medqa", "weight": 0},
    ])
    train_cli(recipe)
    out = tmp_path / "out"
    evaluations = json.loads((out / "eval_results.json").read_text())["evaluations"]
    assert [(e["name"], e["task"], e["n"]) for e in evaluations] == [("pubmedqa", "pubmedqa", 30), ("mcq", "multiple_choice", 10), ("exam", "medqa", 6)]
    assert evaluations[2]["majority_baseline"] is None  # nothing of it trained: no prior to compare with
    ids = json.loads((out / "split_ids.json").read_text())
    assert set(ids) == {"pubmedqa", "mcq", "exam"} and ids["exam"]["train"] == [] and len(ids["exam"]["test"]) == 6
    prepared, _ = batches_of(recipe)
    pubmedqa, mcq_data, _ = prepared.datasets
    assert prepared.stats["train"].rows == len(pubmedqa.parts["train"]) + round(0.5 * len(mcq_data.parts["train"]))


def test_eval_of_a_run_scores_its_own_test_ids_whatever_the_seeds(write_recipe, tmp_path):
    items = [{"question": f"Case {i}?", "options": DRUGS, "answer_idx": i % 4} for i in range(60)]
    recipe = write_recipe(task="multiple_choice", dataset_name=str(write_jsonl(tmp_path / "mcq.jsonl", items)), seed=42)
    train_cli(recipe)
    out = tmp_path / "out"
    recorded = json.loads((out / "split_ids.json").read_text())["mcq"]["test"]
    proc = run_cli("eval", out, "--seed", "7", "--split_seed", "7")
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(scored) == sorted(recorded)
    from test_data import load

    resplit = load(task="multiple_choice", dataset_name=str(tmp_path / "mcq.jsonl"), split_seed=7).parts["test"]
    assert sorted(r["id"] for r in resplit) != sorted(recorded)  # a fresh split would have scored other rows


def test_eval_without_a_run_writes_its_own_folder_then_training_proceeds(write_recipe, tmp_path, tiny_model, tiny_chat_model):
    recipe = write_recipe(max_test_samples=10)
    proc = run_cli("eval", recipe)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / "eval" / f"out-{tiny_model.name}"
    assert (folder / "eval_results.json").is_file() and (folder / "evaluation.yaml").is_file()
    assert not (tmp_path / "out").exists()  # the recipe's output_dir is left for training
    assert run_cli(recipe).returncode == 0
    # another model on the same recipe: the run's adapter is not loaded onto it, and the run is not overwritten
    before = (tmp_path / "out" / "eval_results.json").read_text()
    other = run_cli("eval", recipe, "--model_name_or_path", tiny_chat_model)
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "out" / "eval_results.json").read_text() == before
    written = json.loads((tmp_path / "eval" / f"out-{tiny_chat_model.name}" / "eval_results.json").read_text())
    assert written["run"]["adapter"] is False and set(written["evaluations"][0]["models"]) == {"base"}


def test_no_task_branches_outside_the_tasks():
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in (ROOT / "medsft").rglob("*.py") if "tasks" not in p.parts
            for n, line in enumerate(p.read_text().splitlines(), 1) if "task ==" in line]
    assert hits == []
