"""The server under sustained load and its own failures: a running batch's cache bounded by its live rows, text
decoded incrementally, a failing model a 5xx (never a 4xx), a dead worker a 503 at once and restarted, a deadline
its own finish reason, the same text in any batch on every family of the zoo."""

import json
import threading
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import zoo
from medsft.data import templates
from medsft.recipe.keys import DataSpec
from medsft.serving.engine import Engine, Job
from medsft.generation.detokenize import decode_step
from medsft.models.inference import Loaded
from medsft.models.tokenizer import load_tokenizer
from test_server_limits import _wait, client_for


@pytest.fixture(scope="module")
def loaded(tiny_chat_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    return Loaded(model, load_tokenizer(str(tiny_chat_model)), str(tiny_chat_model), DataSpec(), 512)


def test_a_long_running_batch_keeps_its_cache_bounded_by_its_live_rows(loaded):
    """Rows join and leave a batch that never empties for 600 steps: at every step the cache holds exactly the
    columns of the longest live row, never the history of the batch."""
    tok = loaded.tokenizer
    engine = Engine(loaded.model, tok, max_batch=4)
    seen, original = [], engine._step

    def recording(batch):
        seen.append((batch.mask.shape[1], batch.cache.get_seq_length(), max(batch.lengths), len(batch.jobs)))
        return original(batch)

    engine._step = recording
    prompts = ["Patient presents with fever", "IMPRESSION:", "Temperature 39 C. The patient was seen twice",
               "Question: Is the patient febrile?\nAnswer:"]
    submitted = []

    def submit(n: int) -> None:
        job = Job(tok(prompts[n % 4])["input_ids"], 10 + 7 * (n % 7), min_new_tokens=10 + 7 * (n % 7),
                  on_event=lambda text, done: done and len(seen) < 600 and submit(n + 4))
        submitted.append(job)
        engine.submit(job)

    for n in range(4):
        submit(n)
    _wait(lambda: len(seen) >= 600 and all(j.finish_reason for j in submitted), timeout=300)
    assert engine.steps >= 600 and len(submitted) > 40  # one batch all along: rows joined and left it
    assert all(width == cached == longest for width, cached, longest, _ in seen)
    assert max(width for width, *_ in seen) < 120  # 600 steps on, still the length of a row, not of the history


TEXTS = st.text(alphabet=st.sampled_from(list("fever 39.5°C naïve café — ü 発熱 🤒 \n.,?")), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(text=TEXTS)
def test_incremental_text_equals_a_full_decode(tiny_chat_model, text):
    """Byte-level tokens split multi-byte characters: decoding only the new tokens, a half character held back,
    adds up to the decode of them all."""
    tok = load_tokenizer(str(tiny_chat_model))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    out, prefix, read = "", 0, 0
    for k in range(1, len(ids) + 1):
        piece, prefix, read = decode_step(tok, ids[:k], prefix, read, final=k == len(ids))
        assert "\ufffd" not in piece or k == len(ids)
        out += piece
    assert out == tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == text


@settings(max_examples=30, deadline=None)
@given(text=TEXTS, cut=st.integers(0, 50), size=st.integers(1, 6))
def test_a_stop_string_spanning_tokens_cuts_the_text_where_a_full_decode_would(loaded, text, cut, size):
    tok = loaded.tokenizer
    engine = Engine(loaded.model, tok)
    stop = text[min(cut, len(text) - 1):][:size]
    streamed = []
    job = Job([1], 1000, stops=[stop], on_event=lambda piece, done: streamed.append(piece))
    for token in tok(text + " and more", add_special_tokens=False)["input_ids"]:
        if engine._advance(job, token):
            break
    assert job.finish_reason == "stop" and job.text == text[: text.index(stop)] and "".join(streamed) == job.text


class Failing(torch.nn.Module):
    """The tiny model, raising as CUDA does when it runs out of memory from its `fail_at`-th forward pass on."""

    def __init__(self, model, fail_at: int):
        super().__init__()
        self.model, self.fail_at, self.calls = model, fail_at, 0
        self.config, self.generation_config = model.config, model.generation_config

    def forward(self, **kwargs):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(**kwargs)

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()


def failing_client(loaded, fail_at: int, **options):
    return client_for(Loaded(Failing(loaded.model, fail_at), loaded.tokenizer, loaded.name, DataSpec(), 512), **options)


def test_a_model_that_raises_is_a_server_error_never_the_clients(loaded):
    with failing_client(loaded, fail_at=3) as client:
        response = client.post("/v1/completions", json={"prompt": "IMPRESSION:", "max_tokens": 8})
        error = response.json()["error"]
        assert response.status_code == 500 and error["type"] == "server_error"
        assert error["message"] == "generation failed: CUDA out of memory. Tried to allocate 2.00 GiB"
        assert client.get("/health").status_code == 200  # one batch failed; the worker serves on


def test_a_stream_that_fails_ends_with_an_error_event(loaded):
    with failing_client(loaded, fail_at=4) as client:
        body = {"messages": [{"role": "user", "content": "Febrile?"}], "max_tokens": 8, "min_tokens": 8, "stream": True}
        response = client.post("/v1/chat/completions", json=body)
        lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
        assert response.status_code == 200 and "data: [DONE]" not in lines
        last = json.loads(lines[-1][6:])
        assert last["error"]["type"] == "server_error" and "CUDA out of memory" in last["error"]["message"]
        assert all(json.loads(line[6:]).get("choices", [{}])[0].get("finish_reason") is None for line in lines[:-1])
    with failing_client(loaded, fail_at=1) as client:  # failed before its first token: a status says so
        response = client.post("/v1/completions", json={"prompt": "IMPRESSION:", "max_tokens": 8, "stream": True})
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"


def test_a_killed_worker_answers_503_at_once_and_is_restarted(loaded, monkeypatch):
    """The worker dies outside a batch's own failure (a bug): the request waiting for it and any new one get 503
    with Retry-After at once, /health answers 503 while it is down, and it is started again."""
    with client_for(loaded, max_batch=1, max_tokens_cap=300) as client:
        engine = client.app.state.engine
        engine.restart_delay = 3.0
        answers = {}
        long = {"prompt": "History", "max_tokens": 200, "min_tokens": 200, "temperature": 0}
        first = threading.Thread(target=lambda: answers.setdefault("first", client.post("/v1/completions", json=long)))
        first.start()
        _wait(lambda: engine.steps > 0)
        waiting = threading.Thread(target=lambda: answers.setdefault("waiting", client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})))
        waiting.start()
        _wait(lambda: engine.depth() == 1)

        def bug(job):
            raise RuntimeError("a bug in the worker")

        monkeypatch.setattr(engine, "_expired", bug)  # the next job the worker takes kills it
        first.join()
        waiting.join()
        assert answers["first"].status_code == 200
        refused = answers["waiting"]
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "worker_unavailable"
        assert int(refused.headers["Retry-After"]) >= 1
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        started = time.monotonic()
        new = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert new.status_code == 503 and time.monotonic() - started < 1.0  # at once, not at its own timeout
        monkeypatch.undo()
        _wait(lambda: client.get("/health").status_code == 200, timeout=30)
        assert client.get("/health").json()["restarts"] == 1
        assert client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


class Slow(Failing):
    def forward(self, **kwargs):
        time.sleep(0.02)
        return self.model(**kwargs)


def test_a_deadline_mid_generation_ends_with_its_own_reason(loaded):
    slow = Loaded(Slow(loaded.model, 0), loaded.tokenizer, loaded.name, DataSpec(), 512)
    with client_for(slow, timeout=0.5, max_tokens_cap=300) as client:
        long = {"prompt": "History", "max_tokens": 200, "min_tokens": 200}
        whole = client.post("/v1/completions", json=long).json()
        assert whole["choices"][0]["finish_reason"] == "timeout" and 0 < whole["usage"]["completion_tokens"] < 200
        stream = client.post("/v1/completions", json={**long, "stream": True}).text
        events = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: {")]
        assert events[-1]["choices"][0]["finish_reason"] == "timeout" and stream.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("name", zoo.FAMILIES)
def test_every_family_gets_the_same_text_alone_batched_and_joining(zoo_models, name):
    """Greedy text of a request alone, in a batch of four, and joining a running batch (caches merged, columns
    trimmed as rows leave) is the same, on every family: Gemma-2's sliding window (16 tokens) is crossed."""
    from transformers import AutoModelForCausalLM

    path = zoo_models(name)
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer(str(path))
    chat = zoo.FAMILIES[name].template is not None
    prompts = ["Is the patient febrile?", "Temperature 39 C.", "IMPRESSION: pneumonia of the left lower lobe", "PLAN:"]
    ids = [templates.chat_ids(tok, [{"role": "user", "content": p}], True) if chat else tok(p)["input_ids"] for p in prompts]
    engine = Engine(model, tok, max_batch=4)
    alone = []
    for i in ids:
        job = Job(i, 24, min_new_tokens=24)
        engine.run([job])
        alone.append(job.tokens)
    together = [Job(i, 12 + 4 * k, min_new_tokens=12 + 4 * k) for k, i in enumerate(ids)]
    engine.run(together)
    assert [j.tokens for j in together] == [a[: 12 + 4 * k] for k, a in enumerate(alone)]
    first, later = Job(ids[0], 24, min_new_tokens=24), [Job(i, 24, min_new_tokens=24) for i in ids[1:]]
    engine.submit(first)
    _wait(lambda: len(first.tokens) >= 5)
    for job in later:
        engine.submit(job)
    _wait(lambda: all(j.finish_reason for j in (first, *later)))
    assert [j.tokens for j in (first, *later)] == alone
