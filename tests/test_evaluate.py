import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from medsft.data import encoding
from medsft.evaluation import metrics, scoring
from medsft.recipe.keys import DataSpec
from medsft.models.tokenizer import load_tokenizer
from medsft.tasks import get

from test_data import load


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), load_tokenizer(str(tiny_model))


@pytest.fixture(scope="module")
def rows():
    return load(task="pubmedqa", dataset_name="synthetic", synthetic_size=48).parts["test"]


def test_metrics_match_scikit_learn_on_hand_made_predictions():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    gold = ["yes", "yes", "no", "maybe", "no", "yes", "maybe", "no"]
    pred = ["yes", "no", "no", "yes", "no", "yes", "maybe", "maybe"]
    m = metrics.classification_metrics(gold, pred, ["yes", "no", "maybe"])
    assert m["accuracy"] == pytest.approx(5 / 8) == accuracy_score(gold, pred)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro"))
    # by hand: yes P=2/3 R=2/3, no P=2/3 R=2/3, maybe P=1/2 R=1/2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert m["per_class"]["maybe"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["confusion_matrix"] == confusion_matrix(gold, pred, labels=["yes", "no", "maybe"]).tolist()
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 1], [1, 0, 1]]


def test_majority_baseline():
    m = metrics.majority_baseline(["yes", "yes", "no"], ["yes", "no", "maybe", "yes"], ["yes", "no", "maybe"])
    assert m["label"] == "yes" and m["accuracy"] == 0.5
    assert metrics.majority_baseline([], ["yes"], ["yes", "no"]) is None  # an evaluation-only dataset has no prior


@pytest.mark.parametrize("style", ["medsft", "lm_eval"])
def test_choice_scores_batched_equal_unbatched(model_and_tokenizer, rows, style):
    model, tok = model_and_tokenizer
    task = get(DataSpec(task="pubmedqa", prompt_style=style))
    batched = scoring.score_choices(model, tok, task, rows, max_length=256, batch_size=8)
    single = scoring.score_choices(model, tok, task, rows, max_length=256, batch_size=1)
    for a, b in zip(batched, single):
        assert a["id"] == b["id"] and a["prediction"] == b["prediction"]
        for c in ("yes", "no", "maybe"):
            assert a["loglik"][c] == pytest.approx(b["loglik"][c], abs=1e-4)


def test_choice_scores_equal_a_plain_forward(model_and_tokenizer, rows):
    """The log-likelihood of each choice is exactly what a forward pass over prompt + choice gives."""
    model, tok = model_and_tokenizer
    task = get(DataSpec(task="pubmedqa"))
    row = rows[0]
    result = scoring.score_choices(model, tok, task, [row], max_length=None)[0]
    prompt = tok(task.example(row).prompt)["input_ids"]
    for choice in ("yes", "no", "maybe"):
        cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + cont])).logits[0].float(), -1)
        expected = sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(cont))
        assert result["loglik"][choice] == pytest.approx(expected, abs=1e-4)


def test_perplexity_is_token_weighted(model_and_tokenizer):
    model, tok = model_and_tokenizer
    task = get(DataSpec(task="report"))
    notes = load(task="report", dataset_name="synthetic", synthetic_size=6, test_split_size=0, eval_split_size=0).parts["train"]
    ppl = scoring.perplexity(model, tok, task, notes, max_length=64)
    total, count = 0.0, 0
    for note in notes:  # every piece of every note, as training splits it
        for piece in encoding.Encoder(tok, 64)(task.example(note))[0]:
            ids = piece["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            total += sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1))
            count += len(ids) - 1
    assert ppl == pytest.approx(math.exp(-total / count), rel=1e-4)


def test_choice_scores_of_multi_token_choices_equal_a_plain_forward(model_and_tokenizer):
    """Labels longer than one token are scored as their own sequences: the sum of their tokens' log-probabilities."""
    model, tok = model_and_tokenizer
    task = get(DataSpec(task="multiple_choice", choice_labels=["alpha", "beta", "gamma"], options_field="options"))
    row = task.row({"question": "Which drug?", "options": ["aspirin", "heparin", "insulin"], "answer_idx": 1}, "0")
    task.prepare([row])
    result = scoring.score_choices(model, tok, task, [row], max_length=None)[0]
    assert result["gold"] == "beta" and set(result["loglik"]) == {"alpha", "beta", "gamma"}
    prompt = tok(task.example(row).prompt)["input_ids"]
    for label in ("alpha", "beta", "gamma"):
        cont = tok(" " + label, add_special_tokens=False)["input_ids"]
        assert len(cont) > 1 or label == "alpha"
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + cont])).logits[0].float(), -1)
        expected = sum(logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(cont))
        assert result["loglik"][label] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("batches,processes", [(5, 2), (1, 2), (6, 3), (2, 4), (0, 2)])
def test_each_batch_is_scored_by_one_process_and_every_rank_runs_as_many_passes(monkeypatch, batches, processes):
    import accelerate

    from medsft.evaluation import sharing

    monkeypatch.setattr(accelerate, "PartialState", lambda: type("S", (), {"num_processes": processes, "process_index": 0})())
    shares = sharing.shares(batches)
    assert len(shares) == processes and len({len(s) for s in shares}) == 1  # ZeRO-3: every forward pass is collective
    real = sorted(j for s in shares for j in s if j >= 0)
    assert real == list(range(batches))  # each batch once, on exactly one process
    assert sum(j == -1 for s in shares for j in s) == len(shares[0]) * processes - batches  # repeats pad short shares
