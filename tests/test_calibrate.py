import numpy as np
import pytest

from medsft.evaluation import calibration
from medsft.data import datasets as data
from medsft.evaluation import comparison, scoring
from medsft.recipe.keys import DataSpec
from medsft.tasks import get

LABELS = ["yes", "no", "maybe"]


def ll(yes, no, maybe=-5.0):
    return {"yes": yes, "no": no, "maybe": maybe}


def test_offsets_move_the_boundary_to_where_the_ranking_pays():
    # every item prefers " yes" by argmax, but "no" items prefer it by only 0.2 nats, "yes" items by 0.5
    logliks = [ll(-1.0, -1.5)] * 6 + [ll(-1.0, -1.2)] * 4
    gold = ["yes"] * 6 + ["no"] * 4
    offsets = calibration.fit_offsets(logliks, gold, LABELS)
    assert offsets == {"yes": 0.0, "no": pytest.approx(0.3), "maybe": 0.0}  # the smallest shift that separates them
    assert calibration.predict(logliks, offsets, LABELS) == gold


def test_no_reason_to_move_keeps_the_argmax():
    logliks = [ll(-1.0, -2.0), ll(-2.0, -1.0), ll(-3.0, -3.0, -1.0)]
    gold = ["yes", "no", "maybe"]
    assert calibration.fit_offsets(logliks, gold, LABELS) == {"yes": 0.0, "no": 0.0, "maybe": 0.0}


def test_the_vectorised_objective_is_scikit_learns():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    for k in (2, 4, 5):
        gold, predicted = rng.integers(0, k, 60), rng.integers(0, k - 1, 60)  # one label never predicted
        expected = accuracy_score(gold, predicted) + f1_score(gold, predicted, labels=list(range(k)), average="macro", zero_division=0)
        assert calibration.accuracy_plus_macro_f1(gold, predicted, k) == pytest.approx(expected)


def test_four_choices_are_fitted_by_coordinate_ascent():
    """The label " D" is under-predicted by 1 nat: its offset is found and the other choices stay where they are."""
    labels = ["A", "B", "C", "D"]
    rng = np.random.default_rng(1)
    gold, logliks = [], []
    for i in range(80):
        truth = labels[i % 4]
        scores = {c: float(rng.normal(-3, 0.2)) for c in labels}
        scores[truth] += 1.0 - (1.5 if truth == "D" else 0.0)
        gold.append(truth)
        logliks.append(scores)
    offsets = calibration.fit_offsets(logliks, gold, labels)
    assert 0.4 <= offsets["D"] <= 2.0 and offsets["A"] == 0.0
    fitted = calibration.predict(logliks, offsets, labels)
    assert sum(p == g for p, g in zip(fitted, gold)) > sum(p == g for p, g in zip(calibration.predict(logliks, {}, labels), gold))


def test_before_and_after_calibrates_each_model_on_dev_items_only(tiny_model):
    from transformers import AutoModelForCausalLM

    from medsft.models.tokenizer import load_tokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), load_tokenizer(str(tiny_model))
    spec = DataSpec(task="pubmedqa", dataset_name="synthetic", calibrate=True, name="pubmedqa")
    task = get(spec)
    rows = data.rows(spec, task)["train"][:60]
    test, dev = rows[:40], rows[40:]
    dataset = data.Dataset(spec, task, {"train": rows, "eval": dev, "test": test})
    results, predictions = comparison.before_and_after(model, tok, dataset, scoring.Settings(max_length=256, sample_count=0), trained=False)
    record = results["models"]["base"]["calibration"]
    assert record["dev_items"] == 20
    raw = scoring.score_choices(model, tok, task, test, 256)
    dev_scores = scoring.score_choices(model, tok, task, dev, 256)
    expected = calibration.fit_offsets([p["loglik"] for p in dev_scores], [p["gold"] for p in dev_scores], LABELS)
    assert record["offsets"] == expected
    assert [p["base_prediction"] for p in predictions] == calibration.predict([p["loglik"] for p in raw], expected, LABELS)
    argmax_accuracy = sum(p["prediction"] == p["gold"] for p in raw) / len(raw)
    assert record["argmax"]["accuracy"] == pytest.approx(argmax_accuracy)


def test_cross_fitted_offsets_decide_each_fold_with_the_other_folds_only():
    from medsft.training import cross_validation

    labels = ["yes", "no"]
    # fold 0 says "no" needs a large boost; fold 1, fitted alone, needs none
    fold0 = [{"gold": "no", "loglik": {"yes": 0.0, "no": -2.0}}] * 4 + [{"gold": "yes", "loglik": {"yes": 0.0, "no": -5.0}}] * 2
    fold1 = [{"gold": "yes", "loglik": {"yes": 0.0, "no": -1.0}}] * 4 + [{"gold": "no", "loglik": {"yes": -1.0, "no": 0.0}}] * 2
    crossed = cross_validation.cross_fitted([fold0, fold1], labels, seed=0)
    expected = []
    for held, other in ((fold0, fold1), (fold1, fold0)):
        offsets = calibration.fit_offsets([p["loglik"] for p in other], [p["gold"] for p in other], labels)
        expected += [p == q["gold"] for p, q in zip(calibration.predict([q["loglik"] for q in held], offsets, labels), held)]
    assert crossed["accuracy"] == pytest.approx(sum(expected) / len(expected)) == pytest.approx(4 / 12)
    pooled = fold0 + fold1
    in_sample = calibration.fit_offsets([p["loglik"] for p in pooled], [p["gold"] for p in pooled], labels)
    right = sum(p == q["gold"] for p, q in zip(calibration.predict([q["loglik"] for q in pooled], in_sample, labels), pooled))
    assert right / len(pooled) > crossed["accuracy"]  # in sample flatters the offsets
