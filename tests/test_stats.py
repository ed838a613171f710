"""Intervals and paired tests: the numbers a reader needs to tell whether a fine-tune helped."""

import numpy as np
import pytest
from scipy.stats import binomtest

from medsft.evaluation import stats

LABELS = ["yes", "no", "maybe"]
GOLD = ["yes"] * 30 + ["no"] * 20 + ["maybe"] * 10
BASE = ["yes"] * 30 + ["yes"] * 12 + ["no"] * 8 + ["yes"] * 10
TUNED = ["yes"] * 26 + ["no"] * 4 + ["no"] * 17 + ["yes"] * 3 + ["maybe"] * 6 + ["no"] * 4


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_more_items():
    ci = stats.classification_intervals(GOLD, TUNED, LABELS, seed=0)
    accuracy = np.mean(np.array(GOLD) == np.array(TUNED))
    assert ci["accuracy"][0] < accuracy < ci["accuracy"][1]
    wide = ci["accuracy"][1] - ci["accuracy"][0]
    four = stats.classification_intervals(GOLD * 4, TUNED * 4, LABELS, seed=0)
    assert four["accuracy"][1] - four["accuracy"][0] < 0.6 * wide  # sqrt(4) = 2: about half as wide
    for label in LABELS:
        low, high = four["per_class_f1"][label]
        assert high - low < ci["per_class_f1"][label][1] - ci["per_class_f1"][label][0]
    assert stats.classification_intervals(GOLD, TUNED, LABELS, seed=0) == ci  # seeded: the same report twice


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_pairs():
    test = stats.paired(GOLD, BASE, TUNED, LABELS)
    base_right, tuned_right = np.array(BASE) == np.array(GOLD), np.array(TUNED) == np.array(GOLD)
    only_base, only_tuned = int((base_right & ~tuned_right).sum()), int((tuned_right & ~base_right).sum())
    assert (test["only_first_right"], test["only_second_right"]) == (only_base, only_tuned) == (7, 18)
    assert test["p_value"] == pytest.approx(binomtest(only_tuned, only_base + only_tuned, 0.5).pvalue)
    assert test["accuracy_delta"] == pytest.approx(tuned_right.mean() - base_right.mean())
    same = stats.paired(GOLD, TUNED, TUNED, LABELS)
    assert same["p_value"] == 1.0 and same["macro_f1_p_value"] == 1.0


def test_paired_bootstrap_of_macro_f1_sees_a_real_gain():
    from sklearn.metrics import f1_score

    test = stats.paired(GOLD * 3, BASE * 3, TUNED * 3, LABELS)
    delta = f1_score(GOLD, TUNED, average="macro") - f1_score(GOLD, BASE, average="macro")
    low, high = test["macro_f1_delta_ci"]
    assert low < delta < high and low > 0 and test["macro_f1_p_value"] < 0.05


def test_a_bootstrap_p_value_is_never_zero():
    # Every resample favours the perfect model: the p-value is the smallest B resamples can show, not 0.
    test = stats.paired(GOLD, BASE, GOLD, LABELS)
    assert test["macro_f1_p_value"] == pytest.approx(2 / (stats.RESAMPLES + 1))


def test_perplexity_interval_and_ratio():
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 50, 80).tolist()
    base = [-2.0 * n + rng.normal(0, 3) for n in tokens]
    tuned = [ll + 0.2 * n for ll, n in zip(base, tokens)]  # 0.2 nats a token better
    low, high = stats.perplexity_interval(tuned, tokens)
    point = np.exp(-sum(tuned) / sum(tokens))
    assert low < point < high
    test = stats.paired_perplexity(base, tuned, tokens)
    assert test["perplexity_ratio"] == pytest.approx(np.exp(-0.2)) and test["p_value"] < 0.05


def test_the_report_shows_intervals_and_p_values():
    from rich.console import Console

    from medsft.console import evaluation_tables
    from medsft.evaluation.metrics import classification_metrics

    models = {}
    for name, predicted in (("base", BASE), ("tuned", TUNED)):
        models[name] = {**classification_metrics(GOLD, predicted, LABELS), "ci": stats.classification_intervals(GOLD, predicted, LABELS)}
    majority = {"label": "yes", **classification_metrics(GOLD, ["yes"] * 60, LABELS)}
    evaluation = {"name": "pubmedqa", "task": "pubmedqa", "n": 60, "labels": LABELS, "models": models,
                  "majority_baseline": majority,
                  "tests": {"tuned_vs_base": stats.paired(GOLD, BASE, TUNED, LABELS),
                            "tuned_vs_majority": stats.paired(GOLD, ["yes"] * 60, TUNED, LABELS)}}
    console = Console(record=True, width=200)
    evaluation_tables.eval_report(console, {"run": {}, "evaluations": [evaluation]})
    text = console.export_text()
    low, high = models["tuned"]["ci"]["accuracy"]
    assert f"{models['tuned']['accuracy'] * 100:.1f} [{low * 100:.1f}, {high * 100:.1f}]" in text
    p = evaluation["tests"]["tuned_vs_base"]["p_value"]
    assert f"(p {p:.2g})" in text and "*" in text


def test_samples_are_short_and_repetition_is_cut():
    from medsft.console.evaluation_tables import short

    assert short("A:\n" * 20) == "A:\n…"
    assert short("\n".join(f"line {i}" for i in range(9))) == "line 0\nline 1\nline 2\nline 3 …"
    assert short("yes. It works.") == "yes. It works."
