import json

import pytest
from PIL import Image

from conftest import run_cli


@pytest.mark.slow
def test_gate_missed_exits_3_and_still_writes_everything(write_recipe, tmp_path):
    proc = run_cli(write_recipe(max_steps=2, min_accuracy=0.99, max_test_samples=20))
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("medsft: quality gate missed: test accuracy ") and "is below min_accuracy 0.99" in line
    out = tmp_path / "out"
    results = json.loads((out / "eval_results.json").read_text())
    assert results["evaluations"][0]["models"]["tuned"]["accuracy"] < 0.99
    for name in ("adapter_model.safetensors", "predictions.jsonl", "loss_curves.png", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    for name in ("loss_curves.png", "confusion_matrix.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 200


@pytest.mark.slow
def test_gate_met_exits_0(write_recipe):
    proc = run_cli(write_recipe(max_steps=2, min_accuracy=0.0, max_eval_loss=1e9, eval_strategy="steps", eval_steps=2, max_test_samples=20))
    assert proc.returncode == 0, proc.stderr


def test_gate_rules():
    from medsft.recipe.keys import MedsftArguments
    from medsft.evaluation.metrics import quality_gate

    args = MedsftArguments(max_eval_loss=0.5, min_accuracy=0.6)
    perplexity = {"models": {"base": {"perplexity": 9.0}}}
    results = {"evaluations": [perplexity, {"models": {"base": {"accuracy": 0.9}, "tuned": {"accuracy": 0.55}}}]}
    assert quality_gate(args, 0.7, results) == [
        "eval loss 0.7000 is above max_eval_loss 0.5",
        "test accuracy 0.5500 is below min_accuracy 0.6",
    ]
    assert quality_gate(args, 0.4, {"evaluations": [{"models": {"tuned": {"accuracy": 0.6}}}]}) == []
    assert quality_gate(MedsftArguments(), None, None) == []


def test_eval_report_renders_table_rows():
    from rich.console import Console

    from medsft.console import evaluation_tables
    from medsft.evaluation.metrics import classification_metrics

    labels = ["yes", "no", "maybe"]
    gold = ["yes", "no", "maybe", "yes"]
    evaluation = {
        "name": "pubmedqa", "task": "pubmedqa", "n": 4, "labels": labels,
        "models": {"base": classification_metrics(gold, ["yes"] * 4, labels), "tuned": classification_metrics(gold, gold, labels)},
        "majority_baseline": {"label": "yes", **classification_metrics(gold, ["yes"] * 4, labels)},
        "samples": [{"prompt": "Abstract: ... Question: Does it work?", "gold": " yes", "base": " no", "tuned": " yes. It does."}],
    }
    notes = {"name": "notes", "task": "report", "n": 9, "models": {"base": {"perplexity": 12.5}, "tuned": {"perplexity": 7.25}}}
    results = {
        "run": {"recipe": "recipes/x.yaml", "model": "tiny", "adapter": True,
                "datasets": {"pubmedqa": {"train": 450, "eval": 50, "test": 4}, "notes": {"train": 3, "eval": 1, "test": 9}},
                "steps": 114, "train_seconds": 1227.0},
        "evaluations": [evaluation, notes],
    }
    console = Console(record=True, width=120)
    evaluation_tables.eval_report(console, results)
    text = console.export_text()
    assert "pubmedqa: pubmedqa on 4 test items" in text and "notes: report on 9 test items" in text
    assert "12.50" in text and "7.25" in text
    assert "recipes/x.yaml" in text and "tiny + LoRA" in text and "pubmedqa: train 450, eval 50, test 4" in text
    assert "114" in text and "20 min 27 s" in text
    assert "Question: Does it work?" in text and "yes. It does." in text and "reference" in text
    assert "accuracy %" in text and "50.0" in text and "100.0" in text and "+50.0" in text
    assert "F1 maybe (n=1)" in text
    assert "confusion matrix (tuned)" in text
