"""The families users fine-tune (tests/zoo.py: Llama-3, Qwen2, Gemma-2, Mistral, Phi-3, GPT-2): the label mask,
where generation stops, and a template that refuses a system turn, checked per family against the template's text."""

import threading

import pytest
from transformers import AutoModelForCausalLM

import zoo
from medsft.data import encoding, templates
from medsft.generation import completion
from medsft.models.tokenizer import load_tokenizer
from medsft.serving import engine
from medsft.tasks import Example

CONVERSATION = [{"role": "user", "content": "Is the patient febrile?"},
                {"role": "assistant", "content": "Yes, 38.9 C."},
                {"role": "user", "content": "Pneumonia on the X-ray?"},
                {"role": "assistant", "content": "No consolidation."}]
SYSTEM = {"role": "system", "content": "Answer briefly."}


def expected_mask(tokenizer, family, messages) -> list[int]:
    """Independently of medsft's own method (renderings compared as prefixes): in the template's text, each
    assistant turn's content and the end-of-turn token right after it; every other character (system, user, the
    template's markers, what follows the end-of-turn token) untrained."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans, cursor = [], 0
    for m in messages:
        if m["role"] != "assistant":
            continue
        start = text.index(m["content"], cursor)
        end = text.index(family.end_of_turn, start + len(m["content"])) + len(family.end_of_turn)
        spans.append((start, end))
        cursor = end
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoded["input_ids"] == templates.chat_ids(tokenizer, messages), "the template renders to the same ids"
    return [int(any(s <= a and b <= e and b > a for s, e in spans)) for a, b in encoded["offset_mapping"]]


@pytest.mark.parametrize("name", zoo.CHAT_FAMILIES)
def test_label_mask_trains_each_assistant_turn_through_its_end_of_turn_once(zoo_models, name):
    family = zoo.FAMILIES[name]
    tokenizer = load_tokenizer(str(zoo_models(name)))
    messages = CONVERSATION if family.system == "raises" else [SYSTEM, *CONVERSATION]
    [row], status = encoding.Encoder(tokenizer, 512)(Example(messages=messages))
    trained = [int(label != encoding.IGNORE) for label in row["labels"]]
    assert status == "ok" and trained == expected_mask(tokenizer, family, messages)
    eot = tokenizer.convert_tokens_to_ids(family.end_of_turn)
    assert [t for t in row["labels"] if t != encoding.IGNORE].count(eot) == 2  # each turn's end, once
    assert row["input_ids"].count(tokenizer.bos_token_id) == (1 if family.bos and "bos_token" in family.template else 0)


@pytest.mark.parametrize("name", zoo.CHAT_FAMILIES)
def test_a_chat_prompt_and_completion_train_the_reply_and_its_end_of_turn(zoo_models, name):
    family = zoo.FAMILIES[name]
    tokenizer = load_tokenizer(str(zoo_models(name)))
    prompt, reply = [{"role": "user", "content": "Abstract: fever.\n\nQuestion: Febrile?\nAnswer:"}], [{"role": "assistant", "content": "yes"}]
    [row], _ = encoding.Encoder(tokenizer, 512)(Example(prompt, reply))
    trained = [t for t in row["labels"] if t != encoding.IGNORE]
    assert trained == tokenizer("yes", add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids(family.end_of_turn)]
    assert [int(x) for x in expected_mask(tokenizer, family, prompt + reply)] == [int(label != encoding.IGNORE) for label in row["labels"]]


@pytest.mark.parametrize("name", zoo.CHAT_FAMILIES)
def test_a_long_chat_prompt_is_shortened_from_the_left_keeping_its_cue(zoo_models, name):
    tokenizer = load_tokenizer(str(zoo_models(name)))
    cue = "\n\nQuestion: Febrile?\nAnswer:"
    prompt = [{"role": "user", "content": "Abstract: " + "the patient was seen again. " * 80 + cue}]
    [row], status = encoding.Encoder(tokenizer, 128)(Example(prompt, [{"role": "assistant", "content": "yes"}], cue=cue))
    assert status == "truncated" and len(row["input_ids"]) <= 128
    text = tokenizer.decode(row["input_ids"])
    assert "Question: Febrile?\nAnswer:" in text and "yes" in text


def model_and_tokenizer(path):
    return AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(str(path))


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_generation_stops_at_every_stop_id_and_the_end_of_turn(zoo_models, name):
    """Each id of generation_config.eos_token_id and the template's end-of-turn token, made the first generated
    token: generate (samples, the generate command) and the server's engine both stop there, with nothing."""
    family = zoo.FAMILIES[name]
    tokenizer = load_tokenizer(str(zoo_models(name)))
    ids = (templates.chat_ids(tokenizer, [{"role": "user", "content": "Is it?"}], True) if family.template
           else tokenizer("Is it?")["input_ids"])
    for token in {*family.stops, *([family.end_of_turn] if family.end_of_turn else [])}:
        model, tokenizer = model_and_tokenizer(zoo_models(name))
        zoo.steer(model, ids, tokenizer.convert_tokens_to_ids(token))
        assert completion.generate(model, tokenizer, [ids], max_new_tokens=12) == [""], token
        worker = engine.Engine(model, tokenizer, max_batch=2)
        done = threading.Event()
        job = engine.Job(list(ids), 12, on_event=lambda text, finished: finished and done.set())
        worker.submit(job)
        assert done.wait(60) and (job.finish_reason, job.tokens, job.text) == ("stop", [], ""), token


def test_min_tokens_holds_back_every_stop_id_and_nothing_else(zoo_models):
    model, tokenizer = model_and_tokenizer(zoo_models("qwen2"))
    ids = templates.chat_ids(tokenizer, [{"role": "user", "content": "Is it?"}], True)
    zoo.steer(model, ids, tokenizer.convert_tokens_to_ids("<|endoftext|>"))  # the second id of the list
    worker = engine.Engine(model, tokenizer)
    done = threading.Event()
    job = engine.Job(list(ids), 6, min_new_tokens=3, on_event=lambda text, finished: finished and done.set())
    worker.submit(job)
    assert done.wait(60) and len(job.tokens) >= 3 and not set(job.tokens[:3]) & set(worker.stops)
    # a tokenizer and model with no end-of-text at all: min_tokens blanks nothing, generation runs to max_tokens
    tokenizer.eos_token, model.generation_config.eos_token_id, tokenizer.chat_template = None, None, None
    worker = engine.Engine(model, tokenizer)
    done.clear()
    job = engine.Job(list(ids), 5, temperature=1.0, seed=3, min_new_tokens=5, on_event=lambda text, finished: finished and done.set())
    worker.submit(job)
    assert done.wait(60) and worker.stops == [] and (job.finish_reason, len(job.tokens)) == ("length", 5)


def test_a_template_that_refuses_a_system_turn_is_one_line(zoo_models, write_recipe, tmp_path, capsys):
    from conftest import write_jsonl
    from medsft.__main__ import main

    rows = [{"question": f"Is finding {i} abnormal?", "answer": "yes"} for i in range(20)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    recipe = write_recipe(model_name_or_path=str(zoo_models("gemma2")), task="template", dataset_name=str(data), chat=True,
                          system_prompt="Answer briefly.", prompt_template="{question}", completion_template="{answer}")
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["medsft: error: the chat template refuses a row: System role not supported; this model's template "
                   "takes no system turn: drop system_prompt (or the system messages)"]
    assert not (tmp_path / "out").exists()


def assert_loaded_as_autotokenizer_loads(path, tmp_path, monkeypatch):
    """load_tokenizer of a local folder, the second time: the class AutoTokenizer chose the first time, loaded
    directly (AutoTokenizer is not called), the same tokenizer (class, everything the data cache keys it by, ids)."""
    from transformers import AutoTokenizer

    from medsft.data.cache import tokenizer_digest
    from medsft.models import tokenizer as loading

    monkeypatch.setenv("MEDSFT_CACHE", str(tmp_path))
    first = load_tokenizer(str(path))
    assert loading._choice(str(path)).is_file()
    chosen = []
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: chosen.append(a))
    second = load_tokenizer(str(path))
    assert chosen == [] and type(second) is type(first)
    assert tokenizer_digest(second) == tokenizer_digest(first)
    text = "Question: Is the patient febrile?\nAnswer: yes <|im_end|> </s>"
    assert second(text)["input_ids"] == first(text)["input_ids"]
    if first.chat_template:
        assert (templates.chat_ids(second, CONVERSATION[:2]) == templates.chat_ids(first, CONVERSATION[:2]))


@pytest.mark.parametrize("family", list(zoo.FAMILIES))
def test_a_remembered_tokenizer_class_loads_what_autotokenizer_loads(zoo_models, family, tmp_path, monkeypatch):
    assert_loaded_as_autotokenizer_loads(zoo_models(family), tmp_path, monkeypatch)
