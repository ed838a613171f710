"""Classification metrics (scikit-learn), the majority baseline and the recipe's quality gate."""

from __future__ import annotations

from collections import Counter
from typing import Any


def classification_metrics(gold: list[str], predicted: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (PubMedQA's official pair; the same for any choice task), per-class rows and the
    confusion matrix (rows gold, columns predicted, in `labels` order), by scikit-learn."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(gold, predicted, labels=labels).tolist(),
    }


def majority_baseline(train_gold: list[str], gold: list[str], labels: list[str]) -> dict[str, Any] | None:
    """Always answer the most frequent training label; None without training rows (an evaluation-only dataset)."""
    if not train_gold:
        return None
    majority = Counter(train_gold).most_common(1)[0][0]
    return {"label": majority, **classification_metrics(gold, [majority] * len(gold), labels)}


def quality_gate(args, eval_loss: float | None, results: dict[str, Any] | None) -> list[str]:
    """The recipe's thresholds that this run missed, one sentence each (empty: the gate is passed). min_accuracy
    applies to the first dataset that has an accuracy."""
    missed = []
    if args.max_eval_loss is not None:
        if eval_loss is None:
            missed.append(f"max_eval_loss is {args.max_eval_loss} but the run has no eval loss (set eval_strategy)")
        elif eval_loss > args.max_eval_loss:
            missed.append(f"eval loss {eval_loss:.4f} is above max_eval_loss {args.max_eval_loss}")
    if args.min_accuracy is not None:
        finals = [e["models"].get("tuned", e["models"].get("base")) for e in (results or {}).get("evaluations", [])]
        final = next((m for m in finals if m and "accuracy" in m), None)
        if final is None:
            missed.append(f"min_accuracy is {args.min_accuracy} but the run has no test accuracy")
        elif final["accuracy"] < args.min_accuracy:
            missed.append(f"test accuracy {final['accuracy']:.4f} is below min_accuracy {args.min_accuracy}")
    return missed
