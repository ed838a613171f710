import pytest

from medsft import calibrate, data, evaluate
from medsft.config import MedsftArguments


def ll(yes, no, maybe=-5.0):
    return {"yes": yes, "no": no, "maybe": maybe}


def test_offsets_move_the_boundary_to_where_the_ranking_pays():
    # every item prefers " yes" by argmax, but "no" items prefer it by only 0.2 nats, "yes" items by 0.5
    logliks = [ll(-1.0, -1.5)] * 6 + [ll(-1.0, -1.2)] * 4
    gold = ["yes"] * 6 + ["no"] * 4
    offsets = calibrate.fit_offsets(logliks, gold)
    assert offsets == {"yes": 0.0, "no": pytest.approx(0.3), "maybe": 0.0}  # the smallest shift that separates them
    assert calibrate.predict(logliks, offsets) == gold


def test_no_reason_to_move_keeps_the_argmax():
    logliks = [ll(-1.0, -2.0), ll(-2.0, -1.0), ll(-3.0, -3.0, -1.0)]
    gold = ["yes", "no", "maybe"]
    assert calibrate.fit_offsets(logliks, gold) == {"yes": 0.0, "no": 0.0, "maybe": 0.0}


def test_before_and_after_calibrates_each_model_on_dev_items_only(tiny_model):
    from transformers import AutoModelForCausalLM

    from medsft.models import load_tokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), load_tokenizer(str(tiny_model))
    rows = data.load_rows(MedsftArguments(synthetic_size=60), seed=2)
    test, dev = rows[:40], rows[40:]
    args = MedsftArguments(calibrate=True, num_samples=0)
    results, predictions = evaluate.before_and_after(model, tok, test, rows, args, 256, dev_rows=dev)
    record = results["models"]["base"]["calibration"]
    assert record["dev_items"] == 20
    raw = evaluate.score_pubmedqa(model, tok, test, MedsftArguments(), 256)
    dev_scores = evaluate.score_pubmedqa(model, tok, dev, MedsftArguments(), 256)
    expected = calibrate.fit_offsets([p["loglik"] for p in dev_scores], [p["gold"] for p in dev_scores])
    assert record["offsets"] == expected
    assert [p["base_prediction"] for p in predictions] == calibrate.predict([p["loglik"] for p in raw], expected)
    argmax_accuracy = sum(p["prediction"] == p["gold"] for p in raw) / len(raw)
    assert record["argmax"]["accuracy"] == pytest.approx(argmax_accuracy)
