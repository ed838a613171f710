"""The server as OpenAI clients use it: log-probabilities that are the model's own, every field handled or refused by
name, messages as text parts, several models by name, and one generation path shared with `generate`."""

import json
import threading

import pytest
import torch

from conftest import run_cli
from medsft.models.inference import Loaded
from medsft.recipe.keys import DataSpec

MESSAGES = [{"role": "user", "content": "Is the patient tachycardic?"}]


def _loaded(path, model=None):
    from transformers import AutoModelForCausalLM

    from medsft.models.tokenizer import load_tokenizer

    model = model or AutoModelForCausalLM.from_pretrained(path).eval()
    return Loaded(model, load_tokenizer(str(path)), str(path), DataSpec(), 512)


def _openai(app):
    from fastapi.testclient import TestClient
    from openai import OpenAI

    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=TestClient(app), max_retries=0)


@pytest.fixture(scope="module")
def loaded(tiny_chat_model):
    return _loaded(tiny_chat_model)


@pytest.fixture(scope="module")
def client(loaded):
    from medsft.serving import server

    return _openai(server.create_app(loaded))


def greedy_log_softmax(loaded, prompt_ids, n):
    """The greedy tokens after the prompt and each position's log-softmax, one token at a time in float32."""
    ids, rows = list(prompt_ids), []
    with torch.no_grad():
        for _ in range(n):
            rows.append(loaded.model(input_ids=torch.tensor([ids])).logits[0, -1].float().log_softmax(-1))
            ids.append(int(rows[-1].argmax()))
    return ids[len(prompt_ids):], rows


def close(a, b):
    return abs(a - b) < 1e-4


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_are_the_models_own_log_softmax(client, loaded, stream):
    from medsft.data import spans

    out = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True,
                                         top_logprobs=2, stream=stream)
    chunks = list(out) if stream else [out]
    content = [c for chunk in chunks for choice in chunk.choices if choice.logprobs for c in choice.logprobs.content]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) if stream else out.choices[0].message.content
    assert content and bytes(b for c in content for b in c.bytes).decode(errors="replace") == text
    from medsft.generation.detokenize import token_bytes

    spell = token_bytes(loaded.tokenizer)
    tokens, expected = greedy_log_softmax(loaded, spans.generation_prompt(loaded.tokenizer, MESSAGES), len(content))
    for token, row, c in zip(tokens, expected, content):
        assert c.bytes == list(spell(token)) and close(c.logprob, float(row[token]))
        top = torch.topk(row, 2)
        assert [a.bytes for a in c.top_logprobs] == [list(spell(i)) for i in top.indices.tolist()]
        assert all(close(a.logprob, float(v)) for a, v in zip(c.top_logprobs, top.values))


@pytest.mark.parametrize("stream", [False, True])
def test_completion_logprobs_in_the_legacy_shape(client, loaded, stream):
    out = client.completions.create(model="tiny-chat", prompt="Patient presents with", max_tokens=6, temperature=0,
                                    logprobs=3, stream=stream)
    chunks = list(out) if stream else [out]
    tokens = [t for ch in chunks if ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
    values = [v for ch in chunks if ch.choices[0].logprobs for v in ch.choices[0].logprobs.token_logprobs]
    tops = [t for ch in chunks if ch.choices[0].logprobs for t in ch.choices[0].logprobs.top_logprobs]
    offsets = [o for ch in chunks if ch.choices[0].logprobs for o in ch.choices[0].logprobs.text_offset]
    text = "".join(ch.choices[0].text for ch in chunks)
    assert "".join(tokens) == text  # (a character split over tokens starts where its text does: offsets follow the text)
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < len(text)
    ids, expected = greedy_log_softmax(loaded, loaded.tokenizer("Patient presents with")["input_ids"], len(tokens))
    for token, row, text, value, top in zip(ids, expected, tokens, values, tops):
        assert text == loaded.tokenizer.decode([token]) and close(value, float(row[token]))
        best = torch.topk(row, 3)  # keyed by text, as OpenAI's legacy shape: two tokens spelled alike share a key
        spelled = [(loaded.tokenizer.decode([i]), float(v)) for i, v in zip(best.indices.tolist(), best.values)]
        assert top and all(any(k == key and close(v, value) for k, v in spelled) for key, value in top.items())


def test_no_logprobs_unless_asked(client):
    out = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=3, temperature=0)
    assert out.choices[0].logprobs is None


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "dose", "parameters": {"type": "object"}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true, as OpenAI refuses it
    ({"logit_bias": {"not-a-token": 5}}, "logit_bias"),
])
def test_what_the_server_does_not_implement_is_a_400_naming_it(client, extra, param):
    from openai import BadRequestError

    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=3, temperature=0, extra_body=extra)
    assert e.value.body["param"] == param and param in e.value.body["message"]


def test_fields_that_cannot_change_the_answer_are_accepted(client):
    plain = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=5, temperature=0)
    tagged = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=5, temperature=0, user="u-1",
                                            store=False, metadata={"ward": "3"}, extra_body={"response_format": {"type": "text"}})
    assert tagged.choices[0].message.content == plain.choices[0].message.content


def test_text_parts_answer_as_the_same_text_and_an_image_part_is_refused(client):
    from openai import BadRequestError

    plain = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, max_tokens=6, temperature=0)
    parts = [{"role": "user", "content": [{"type": "text", "text": MESSAGES[0]["content"]}]}]
    assert client.chat.completions.create(model="tiny-chat", messages=parts, max_tokens=6,
                                          temperature=0).choices[0].message.content == plain.choices[0].message.content
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="tiny-chat", messages=image, max_tokens=6)
    assert "messages.0.content.1" in e.value.body["message"] and "image_url" in e.value.body["message"]


def test_logit_bias_and_penalties_as_openai_defines_them(client, loaded):
    tok = loaded.tokenizer
    word = next(i for i in range(len(tok)) if tok.decode([i]).strip().isalpha() and len(tok.decode([i]).strip()) >= 4)
    text = tok.decode([word])

    def ask(**extra):
        return client.completions.create(model="tiny-chat", prompt="Fever", max_tokens=8, temperature=0,
                                         logit_bias={str(word): 5}, **extra).choices[0].text

    assert ask() == text * 8  # +5 outweighs every other logit of the tiny model
    assert ask(presence_penalty=2.0).count(text) == 8  # 5 - 2 still leads
    assert ask(frequency_penalty=2.0).count(text) < 8  # 5 - 2 per time it came: it gives way after a few
    chunks = list(client.completions.create(model="tiny-chat", prompt="Fever", max_tokens=4, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def _lora(base_path, folder, seed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                           LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(folder)
    return folder


def test_one_server_answers_base_the_run_and_another_adapter_concurrently(tiny_chat_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medsft.serving import server

    run = _lora(tiny_chat_model, tmp_path / "tiny-run", 1)
    second = _lora(tiny_chat_model, tmp_path / "second", 2)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model), run).eval()
    loaded = Loaded(model, _loaded(tiny_chat_model).tokenizer, str(run), DataSpec(), 512)
    client = _openai(server.create_app(loaded, extra=[("second", second)]))
    assert [m.id for m in client.models.list()] == ["tiny-run", "base", "second"]

    def ask(name):
        return client.completions.create(model=name, prompt="Patient presents with", max_tokens=10, temperature=0).choices[0].text

    alone = {name: ask(name) for name in ("tiny-run", "base", "second")}
    assert len(set(alone.values())) == 3
    from medsft.generation.completion import generate

    plain = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    assert alone["base"] == generate(plain, loaded.tokenizer, ["Patient presents with"], 10)[0]
    together, threads = {}, []
    for _ in range(2):
        for name in alone:
            threads.append(threading.Thread(target=lambda n=name: together.setdefault(n, set()).add(ask(n))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == {name: {text} for name, text in alone.items()}  # mixed in one batch, each its own text
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as e:
        ask("third")
    assert "'second'" in e.value.body["message"]


def test_an_adapter_of_another_base_or_a_taken_name_is_one_line(tiny_chat_model, tiny_model, tmp_path):
    from medsft.errors import UserError
    from medsft.models import adapters

    other = _lora(tiny_chat_model, tmp_path / "other", 3)
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(tmp_path)}))
    with pytest.raises(UserError, match="trained on"):
        adapters.served(_loaded(tiny_chat_model), "tiny-chat", [("other", other)])
    with pytest.raises(UserError, match="NAME=PATH"):
        adapters.parse("no-path")
    with pytest.raises(UserError, match="holds no LoRA adapter"):
        adapters.parse(f"x={tmp_path}")


@pytest.mark.slow
def test_generate_and_the_server_give_one_text_for_one_prompt_seed_and_settings(tiny_chat_model, client, loaded):
    prompt = "Patient presents with fever and"
    cli = run_cli("generate", tiny_chat_model, prompt, "--seed", "7", "--temperature", "0.8", "--max_new_tokens", "24")
    assert cli.returncode == 0, cli.stderr
    served = client.completions.create(model="tiny-chat", prompt=prompt, seed=7, temperature=0.8, max_tokens=24)
    assert cli.stdout == served.choices[0].text + "\n"
    chat = run_cli("generate", tiny_chat_model, MESSAGES[0]["content"], "--chat", "--seed", "3", "--temperature", "0.8",
                   "--max_new_tokens", "16")
    served = client.chat.completions.create(model="tiny-chat", messages=MESSAGES, seed=3, temperature=0.8, max_tokens=16)
    assert chat.stdout == served.choices[0].message.content + "\n"
