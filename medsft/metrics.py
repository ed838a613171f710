"""PubMedQA's official metrics (scikit-learn), the majority baseline and the recipe's quality gate."""

from __future__ import annotations

from typing import Any

from medsft import data
from medsft.config import MedsftArguments
from medsft.tasks.pubmedqa import CHOICES


def classification_metrics(gold: list[str], predicted: list[str]) -> dict[str, Any]:
    """The official PubMedQA metrics (accuracy, macro-F1) and per-class rows, by scikit-learn."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(CHOICES)
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(gold, predicted, labels=labels).tolist(),  # rows gold, columns predicted
    }


def majority_baseline(train_rows: list[dict], gold: list[str]) -> dict[str, Any]:
    """Always answer the most frequent training label."""
    majority = data.label_counts(train_rows).most_common(1)[0][0]
    return {"label": majority, **classification_metrics(gold, [majority] * len(gold))}


def quality_gate(args: MedsftArguments, eval_loss: float | None, results: dict[str, Any] | None) -> list[str]:
    """The recipe's thresholds that this run missed, one sentence each (empty: the gate is passed)."""
    missed = []
    if args.max_eval_loss is not None:
        if eval_loss is None:
            missed.append(f"max_eval_loss is {args.max_eval_loss} but the run has no eval loss (set eval_strategy)")
        elif eval_loss > args.max_eval_loss:
            missed.append(f"eval loss {eval_loss:.4f} is above max_eval_loss {args.max_eval_loss}")
    if args.min_accuracy is not None:
        models = (results or {}).get("models", {})
        final = models.get("tuned", models.get("base"))
        if not final or "accuracy" not in final:
            missed.append(f"min_accuracy is {args.min_accuracy} but the run has no PubMedQA accuracy")
        elif final["accuracy"] < args.min_accuracy:
            missed.append(f"test accuracy {final['accuracy']:.4f} is below min_accuracy {args.min_accuracy}")
    return missed
