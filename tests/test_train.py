import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medsft.training import fit
from medsft.training import prepare
from medsft.recipe.parser import parse_recipe

from conftest import run_cli


def test_sft_steps_change_lora_weights_and_lower_loss(write_recipe):
    recipe = parse_recipe([str(write_recipe(max_steps=12, per_device_train_batch_size=8))])
    prepared = prepare.prepare(recipe)
    trainer = fit.build_trainer(recipe, prepared)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert before and all(torch.count_nonzero(p) == 0 for p in before.values())  # peft starts B at zero
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(before[n], after[n]) for n in before)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_frozen_base_weights_stay(write_recipe):
    recipe = parse_recipe([str(write_recipe(max_steps=2))])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    trainer.train()
    assert all(torch.equal(base[n], p) for n, p in trainer.model.named_parameters() if n in base)


@pytest.mark.slow
def test_cli_end_to_end(write_recipe, tmp_path):
    path = write_recipe(max_steps=6, eval_strategy="steps", eval_steps=3)
    proc = run_cli(path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert "training done" in proc.stdout
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "recipe.yaml", "trainer_state.json"):
        assert (out / name).is_file(), name
    # weights are safetensors only (training_args.bin is transformers' pickled settings, not weights)
    assert [p.name for p in out.glob("*.bin")] == ["training_args.bin"]
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["max_steps"] == 6 and saved["task"] == "pubmedqa"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert any("eval_loss" in h for h in state["log_history"])
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and torch.count_nonzero(v) > 0 for k, v in weights.items())
    # training ends with base vs tuned on the test split, written and rendered
    [results] = json.loads((out / "eval_results.json").read_text())["evaluations"]
    assert results["task"] == "pubmedqa" and set(results["models"]) == {"base", "tuned"}
    assert results["n"] == sum(sum(row) for row in results["models"]["tuned"]["confusion_matrix"])
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == results["n"]
    assert set(predictions[0]) == {"dataset", "scoring", "id", "gold", "base_prediction", "base_loglik", "tuned_prediction",
                                   "tuned_loglik"}
    assert {p["scoring"] for p in predictions} == {"likelihood"}
    # the run recorded its split, and the ids scored are its test ids
    ids = json.loads((out / "split_ids.json").read_text())["pubmedqa"]
    assert sorted(p["id"] for p in predictions) == sorted(ids["test"]) and not set(ids["test"]) & set(ids["train"])
    assert "accuracy %" in proc.stdout and "confusion matrix" in proc.stdout
    # the eval command reloads base + adapter from output_dir and gives the same tuned predictions
    again = run_cli("eval", path)
    assert again.returncode == 0, again.stderr
    reloaded = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["tuned_prediction"] for p in reloaded] == [p["tuned_prediction"] for p in predictions]
    # the saved resolved recipe is itself a recipe: re-running into the same output_dir is the same run
    assert run_cli(out / "recipe.yaml", "--max_steps", "1").returncode == 0


@pytest.mark.slow
def test_scratch_gpt2_trains_a_tokenizer_and_a_model(write_recipe, tmp_path):
    path = write_recipe(
        model_name_or_path="scratch-gpt2",
        use_peft=False,
        task="report",
        scratch_config={"vocab_size": 400, "n_layer": 2, "n_head": 2, "n_embd": 32},
        max_steps=3,
        learning_rate=1e-3,
    )
    proc = run_cli(path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.n_layer == 2 and len(tok) <= 400
    [evaluation] = json.loads((out / "eval_results.json").read_text())["evaluations"]
    assert set(evaluation["models"]) == {"tuned"}  # the trained model, not "base": it has none


@pytest.mark.slow
def test_a_full_fine_tune_is_reported_beside_its_base(write_recipe, tmp_path):
    proc = run_cli(write_recipe(use_peft=False, max_steps=2, max_test_samples=12, learning_rate=1e-3))
    assert proc.returncode == 0, proc.stderr
    [evaluation] = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"]
    assert set(evaluation["models"]) == {"base", "tuned"} and "tuned_vs_base" in evaluation["tests"]


@pytest.mark.slow
def test_task_metrics_during_training_choose_the_best_checkpoint(write_recipe, tmp_path, monkeypatch):
    """eval_accuracy is logged at every evaluation (trainer state and MLflow) and, as metric_for_best_model with
    load_best_model_at_end, the saved adapter is the best checkpoint's."""
    from mlflow.tracking import MlflowClient

    store = tmp_path / "mlruns"
    path = write_recipe(max_steps=6, eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                        metric_for_best_model="eval_accuracy", load_best_model_at_end=True, learning_rate=2e-2,
                        report_to="mlflow", mlflow_tracking_uri=str(store), eval_after_train=False)
    proc = run_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert "dev step 2: loss" in proc.stdout and "accuracy" in proc.stdout
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_loss" in h]
    assert [h["step"] for h in evals if "eval_accuracy" in h][:3] == [2, 4, 6] and all("eval_macro_f1" in h for h in evals)
    best = state["best_model_checkpoint"]
    assert best and state["best_metric"] == max(h["eval_accuracy"] for h in evals)
    saved, chosen = load_file(out / "adapter_model.safetensors"), load_file(f"{best}/adapter_model.safetensors")
    assert saved.keys() == chosen.keys() and all(torch.equal(saved[k], chosen[k]) for k in saved)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    run = client.search_runs([e.experiment_id for e in client.search_experiments()])[0]
    assert len(client.get_metric_history(run.info.run_id, "eval_accuracy")) == len(evals)
