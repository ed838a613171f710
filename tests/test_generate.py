import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from medsft.data import datasets as data
from medsft.evaluation import comparison, scoring
from medsft.recipe.keys import DataSpec
from medsft.generation.completion import generate
from medsft.models.tokenizer import load_tokenizer
from medsft.tasks import get


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval(), load_tokenizer(str(tiny_model))


def test_greedy_generation_is_the_argmax_of_each_step(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompt = "Patient presents with fever"
    text = generate(model, tok, [prompt], max_new_tokens=5)[0]
    ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        for _ in range(5):
            nxt = model(torch.tensor([ids])).logits[0, -1].argmax().item()
            ids.append(nxt)
            if nxt == tok.eos_token_id:
                break
    assert text == tok.decode(ids[len(tok(prompt)["input_ids"]) :], skip_special_tokens=True)


def test_sampling_seed_belongs_to_the_prompt_not_the_batch(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = ["Patient presents with fever", "IMPRESSION:"]
    both = generate(model, tok, prompts, max_new_tokens=12, temperature=1.0, seed=7)
    alone = generate(model, tok, prompts[1:], max_new_tokens=12, temperature=1.0, seed=8)
    assert both[1] == alone[0]
    other_seed = generate(model, tok, prompts, max_new_tokens=12, temperature=1.0, seed=1000)
    assert other_seed != both  # the seed is really used: random weights sample differently


def test_before_and_after_shows_samples_of_both_models_and_counts_batches(model_and_tokenizer):
    from peft import LoraConfig, get_peft_model

    base, tok = model_and_tokenizer
    # init_lora_weights=False: a nonzero adapter, so the tuned model really differs from the base
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    spec = DataSpec(task="pubmedqa", dataset_name="synthetic", name="pubmedqa")
    rows = data.rows(spec, get(spec))["train"][:40]
    dataset = data.Dataset(spec, get(spec), {"train": rows, "eval": [], "test": rows})
    settings = scoring.Settings(max_length=256, batch_size=16, sample_count=2, sample_max_new_tokens=6)
    batches: dict[str, int] = {}

    def track_for(name):
        def track(items, total):
            for item in items:
                batches[name] = batches.get(name, 0) + 1
                yield item
            assert batches[name] == total

        return track

    results, predictions = comparison.before_and_after(model, tok, dataset, settings, track_for=track_for)
    assert batches == {"base": 3, "tuned": 3}  # 40 items in batches of 16
    assert len(predictions) == 40 and set(results["models"]) == {"base", "tuned"}
    assert len(results["samples"]) == 2
    for sample in results["samples"]:
        assert sample["gold"] in (" yes", " no", " maybe") and sample["prompt"].endswith("Answer (yes, no or maybe):")
        assert sample["base"] != sample["tuned"]
    with model.disable_adapter():  # the base samples are the plain model's greedy text
        expected = generate(model, tok, [s["prompt"] for s in results["samples"]], 6, max_length=256)
    assert [s["base"] for s in results["samples"]] == expected


def test_report_samples_default_to_clinical_openings():
    task = get(DataSpec(task="report"))
    assert [p["prompt"] for p in task.samples([], 2, seed=0)] == [
        "Patient presents with fever and a persistent cough",
        "HISTORY OF PRESENT ILLNESS: The patient is a 67-year-old male with chest pain",
    ]
    assert task.samples([], 1, 0, ["A", "B"]) == [{"input": "A", "prompt": "A"}]
    assert task.samples([], 0, 0) == []


def test_conversation_samples_end_before_the_last_assistant_turn():
    task = get(DataSpec(task="messages"))
    row = task.row({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                 {"role": "user", "content": "Dose?"}, {"role": "assistant", "content": "5 mg"}]}, "0")
    [sample] = task.samples([row], 1, seed=0)
    assert sample["input"] == row["messages"][:3] and sample["prompt"] == "Dose?" and sample["gold"] == "5 mg"


@pytest.mark.parametrize("temperature,samples", [(0.0, 1), (0.9, 3)])
def test_generated_answers_are_the_texts_generate_gives_for_the_same_prompt_seed_and_settings(model_and_tokenizer,
                                                                                             temperature, samples):
    """Generative evaluation decodes on the one path: reply k of item i is `generate`'s text for the item's prompt
    under seed + i * samples + k (and so the server's, tests/test_generate_cli.py), whatever it was batched with."""
    from medsft.data import encoding
    from medsft.data.prompts import answer_prompt
    from medsft.evaluation import generative
    from medsft.tasks import synthetic

    model, tokenizer = model_and_tokenizer
    task = get(DataSpec(task="pubmedqa"))
    rows = [task.row(raw, str(i)) for i, raw in enumerate(synthetic.pubmedqa_rows(5, 3))]
    settings = generative.Generation(max_new_tokens=6, num_samples=samples, temperature=temperature)
    scored = {size: generative.score_generated(model, tokenizer, task, rows, 256, size, settings, seed=11)
              for size in (1, 4)}
    assert scored[1] == scored[4]  # a reply does not depend on what it was batched with
    encoder = encoding.Encoder(tokenizer, 256)
    for i, (row, item) in enumerate(zip(rows, scored[4])):
        replies = item.get("replies", [item["reply"]])
        for k, reply in enumerate(replies):
            [expected] = generate(model, tokenizer, [answer_prompt(encoder, task, row)], 6, temperature,
                                  seed=11 + i * samples + k)
            assert reply == expected
    if temperature:
        assert len({r for item in scored[4] for r in item["replies"]}) > len(rows)  # sampled: the replies differ
