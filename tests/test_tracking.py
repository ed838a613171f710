"""report_to: mlflow logs the recipe, the loss history and the evaluation into a local store."""

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def test_mlflow_run_reads_back_params_losses_and_eval_metrics(write_recipe, tmp_path, monkeypatch):
    store = tmp_path / "mlruns"
    recipe = write_recipe(report_to="mlflow", mlflow_tracking_uri=str(store), max_steps=4, max_test_samples=12,
                          sample_count=0, learning_rate=4e-3)
    proc = run_cli(recipe)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.resolve().as_uri())
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["recipe/learning_rate"] == "0.004" and run.data.params["recipe/task"] == "pubmedqa"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    assert len(losses) == 4  # logging_steps 1
    import json

    results = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert run.data.metrics["test/tuned_accuracy"] == pytest.approx(results["evaluations"][0]["models"]["tuned"]["accuracy"])
    assert run.data.metrics["test/base_macro_f1"] == pytest.approx(results["evaluations"][0]["models"]["base"]["macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval_results.json", "predictions.jsonl", "loss_curves.png", "recipe.yaml"} <= artifacts
