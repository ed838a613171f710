"""Decision offsets for a choice task fitted on the dev split, never on the test items.

A small model fine-tuned on a few hundred items ranks answers usefully (yes-vs-no AUC 0.69 on the PubMedQA test
split) but its probabilities stay close to the training label prior (55% yes), so the plain argmax answers "yes"
to almost everything. Adding one log-likelihood offset per choice, chosen on the dev split, moves the decision
boundary to where the ranking pays off; it is a threshold, not a retraining, and the raw argmax is reported beside it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from medsft.errors import UserError
from medsft.runs import records
from medsft.textfiles import read_json

GRID = np.round(np.arange(-3.0, 3.0001, 0.1), 2)  # offsets of each choice relative to the first, in nats


def _scores(logliks: list[dict[str, float]], labels: list[str]) -> np.ndarray:
    """(items, labels) log-likelihoods; a choice an item does not offer scores -inf."""
    return np.array([[ll.get(c, -np.inf) for c in labels] for ll in logliks])


def predict(logliks: list[dict[str, float]], offsets: dict[str, float], labels: list[str]) -> list[str]:
    scores = _scores(logliks, labels) + np.array([offsets.get(c, 0.0) for c in labels])
    return [labels[i] for i in scores.argmax(axis=1)]


def accuracy_plus_macro_f1(gold: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """Accuracy + macro-F1 over k labels (scikit-learn's definitions, zero_division=0), vectorised for the search."""
    matrix = np.bincount(gold * k + predicted, minlength=k * k).reshape(k, k)
    tp = np.diag(matrix).astype(float)
    denominator = matrix.sum(0) + matrix.sum(1)
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return tp.sum() / len(gold) + f1.mean()


def fit_offsets(logliks: list[dict[str, float]], gold: list[str], labels: list[str]) -> dict[str, float]:
    """The offsets maximizing dev accuracy + macro-F1 (ties go to the smallest shift, so a dev set that gives no
    reason to move leaves the argmax as it is). Up to three labels the whole grid is searched; above, coordinate
    ascent over the same grid, one label at a time, until no offset improves."""
    scores = _scores(logliks, labels)
    gold_idx = np.array([labels.index(g) for g in gold])
    k = len(labels)

    def value(shift: tuple[float, ...]) -> tuple[float, float]:
        predicted = (scores + np.array((0.0, *shift))).argmax(axis=1)
        return round(accuracy_plus_macro_f1(gold_idx, predicted, k), 9), -sum(map(abs, shift))

    if k <= 3:
        best = max(itertools.product(GRID, repeat=k - 1), key=value)
    else:
        best, improved = (0.0,) * (k - 1), True
        while improved:
            improved = False
            for j in range(k - 1):
                candidate = max((best[:j] + (g,) + best[j + 1 :] for g in GRID), key=value)
                if value(candidate) > value(best):
                    best, improved = candidate, True
    return {labels[0]: 0.0, **{label: float(o) for label, o in zip(labels[1:], best)}}


def offsets_from(path: str, model: str) -> dict[str, float]:
    """The offsets a cv run fitted for `model` (base or tuned), for `calibration_file`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"calibration_file not found: {file}; run python -m medsft cv RECIPE first")
    try:
        return read_json(file, "calibration_file", dict)[model]["pooled"]["offsets"]
    except (KeyError, TypeError):  # TypeError: no pooled base (a model from scratch)
        raise UserError(f"calibration_file {file} is not a {records.CV_RESULTS} (no {model} offsets)") from None
