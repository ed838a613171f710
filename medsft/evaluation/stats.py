"""How sure a number is: bootstrap intervals over items, paired tests between models scored on the same items.

Every resampling is vectorised (one (resamples, items) index matrix, metrics from batched confusion matrices) and
seeded, so a report is reproducible. Intervals are percentile intervals at 95%.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 2000
LEVEL = 0.95


def _indices(n: int, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: np.ndarray) -> list[float]:
    low, high = np.percentile(values, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return [float(low), float(high)]


def _confusions(gold: np.ndarray, predicted: np.ndarray, k: int, index: np.ndarray) -> np.ndarray:
    """(resamples, k, k) confusion matrices of the resampled items (rows gold, columns predicted)."""
    resamples = index.shape[0]
    cells = gold[index] * k + predicted[index] + (np.arange(resamples) * k * k)[:, None]
    return np.bincount(cells.ravel(), minlength=resamples * k * k).reshape(resamples, k, k)


def _f1(confusions: np.ndarray) -> np.ndarray:
    """(resamples, k) per-class F1 (scikit-learn's, zero_division=0)."""
    tp = np.diagonal(confusions, axis1=1, axis2=2).astype(float)
    denominator = confusions.sum(1) + confusions.sum(2)
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def classification_intervals(gold: list[str], predicted: list[str], labels: list[str], seed: int = 0) -> dict:
    """95% bootstrap intervals of accuracy, macro-F1 and each label's F1 (a prediction that is no label, a generated
    reply that states none, is wrong for every item: one more column of the confusion matrix)."""
    g, p, k = _encode(gold, labels), _encode(predicted, labels), len(labels)
    confusions = _confusions(g, p, k + 1, _indices(len(g), seed))
    accuracy = np.diagonal(confusions, axis1=1, axis2=2).sum(1) / len(g)
    f1 = _f1(confusions)[:, :k]
    return {"accuracy": _interval(accuracy), "macro_f1": _interval(f1.mean(1)),
            "per_class_f1": {label: _interval(f1[:, j]) for j, label in enumerate(labels)}}


def share_interval(flags: list[bool], seed: int = 0) -> list[float]:
    """95% bootstrap interval of a share of items (right answers, unparseable replies)."""
    values = np.asarray(flags, dtype=float)
    return _interval(values[_indices(len(values), seed)].mean(1))


def perplexity_interval(logliks: list[float], tokens: list[int], seed: int = 0) -> list[float]:
    """95% bootstrap interval of a token-weighted perplexity, resampling items (each with its summed log-likelihood
    and its token count)."""
    ll, n = np.asarray(logliks, dtype=float), np.asarray(tokens, dtype=float)
    index = _indices(len(ll), seed)
    return _interval(np.exp(-ll[index].sum(1) / np.maximum(n[index].sum(1), 1)))


def _two_sided(difference: np.ndarray) -> float:
    """Bootstrap p-value of "no difference", counted with the observed sample as one of the resamples
    ((k + 1) / (B + 1)): never 0, since B resamples cannot show a p-value below 1 / (B + 1)."""
    tail = min((difference <= 0).sum(), (difference >= 0).sum())
    return min(1.0, 2 * (tail + 1) / (len(difference) + 1))


def paired(gold: list[str], first: list[str], second: list[str], labels: list[str], seed: int = 0) -> dict:
    """`second` against `first` on the same items: exact McNemar p-value on the items one gets right and the other
    wrong, and a paired bootstrap of the macro-F1 difference (its interval and two-sided p-value)."""
    g, a, b, k = _encode(gold, labels), _encode(first, labels), _encode(second, labels), len(labels)
    right_a, right_b = a == g, b == g
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    mcnemar = binomtest(only_b, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    index = _indices(len(g), seed)
    difference = _f1(_confusions(g, b, k + 1, index))[:, :k].mean(1) - _f1(_confusions(g, a, k + 1, index))[:, :k].mean(1)
    p_f1 = _two_sided(difference)
    accuracy = right_b[index].mean(1) - right_a[index].mean(1)
    return {"accuracy_delta": float(right_b.mean() - right_a.mean()), "accuracy_delta_ci": _interval(accuracy),
            "macro_f1_delta": float(_f1(_confusions(g, b, k + 1, np.arange(len(g))[None]))[0, :k].mean()
                                    - _f1(_confusions(g, a, k + 1, np.arange(len(g))[None]))[0, :k].mean()),
            "only_first_right": only_a, "only_second_right": only_b,
            "p_value": float(mcnemar), "macro_f1_delta_ci": _interval(difference), "macro_f1_p_value": float(p_f1)}


def paired_perplexity(first: list[float], second: list[float], tokens: list[int], seed: int = 0) -> dict:
    """`second` against `first` on the same items (summed log-likelihoods, token counts): the perplexity ratio
    second / first, its paired-bootstrap interval and two-sided p-value (ratio 1: no difference)."""
    a, b, n = (np.asarray(x, dtype=float) for x in (first, second, tokens))
    index = _indices(len(a), seed)
    total = np.maximum(n[index].sum(1), 1)
    log_ratio = (a[index].sum(1) - b[index].sum(1)) / total  # log(ppl_second / ppl_first)
    p = _two_sided(log_ratio)
    ratio = float(np.exp((a.sum() - b.sum()) / max(n.sum(), 1)))
    return {"perplexity_ratio": ratio, "perplexity_ratio_ci": _interval(np.exp(log_ratio)), "p_value": float(p)}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for the number of comparisons (family-wise error), in their order."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _encode(values: list[str], labels: list[str]) -> np.ndarray:
    """Each value's index among the labels; anything else (no answer) one past the last."""
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index.get(v, len(labels)) for v in values], dtype=np.int64)


def mean_interval(values: list[float], seed: int = 0) -> list[float]:
    """95% bootstrap interval of a mean over items (a preference margin)."""
    array = np.asarray(values, dtype=float)
    return _interval(array[_indices(len(array), seed)].mean(1))
