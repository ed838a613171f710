"""MLflow tracking around transformers' own MLflowCallback: a local file store unless told otherwise, the resolved
recipe as params, and after evaluation its metrics and files (report, predictions, plots) in the same run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsft.recipe.parser import Recipe
from medsft.runs.run_folder import ARTIFACTS


def enabled(recipe: Recipe) -> bool:
    report_to = recipe.training.report_to or []
    return "mlflow" in ([report_to] if isinstance(report_to, str) else report_to)


def start(recipe: Recipe) -> Any:
    """Open the MLflow run that the trainer's callback then logs into (it reuses an active run)."""
    import mlflow

    uri = recipe.script.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if "://" not in uri:  # a local folder: MLflow 3 keeps its file store only on request
        uri = Path(uri).resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "medsft"))
    run = mlflow.start_run(run_name=Path(recipe.training.output_dir).name)
    flat = {f"recipe/{k}": str(v)[:500] for k, v in recipe.resolved().items()}  # apart from the trainer's own params
    mlflow.log_params(flat)
    return run


def finish(results: dict | None, eval_loss: float | None, output_dir: str) -> None:
    """Evaluation metrics and the run's files into the active run, then close it."""
    import mlflow

    if eval_loss is not None:
        mlflow.log_metric("final/eval_loss", eval_loss)
    evaluations = (results or {}).get("evaluations", [])
    for evaluation in evaluations:
        prefix = "test/" + (f"{evaluation['name']}/" if len(evaluations) > 1 else "")
        for name, metrics in evaluation["models"].items():
            for key in ("accuracy", "macro_f1", "perplexity"):
                if key in metrics:
                    mlflow.log_metric(f"{prefix}{name}_{key}", metrics[key])
    for name in ARTIFACTS:
        path = Path(output_dir) / name
        if path.is_file():
            mlflow.log_artifact(str(path))
    mlflow.end_run()
