"""The server under hostile input: generated bodies never give a 5xx, limits answer before work, a full queue
answers 503, an API key guards the endpoints, disconnected clients free the worker, batching changes no output."""

import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsft.recipe.keys import DataSpec
from medsft.models.inference import Loaded


@pytest.fixture(scope="module")
def loaded(tiny_chat_model):
    from transformers import AutoModelForCausalLM

    from medsft.models.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval()
    return Loaded(model, load_tokenizer(str(tiny_chat_model)), str(tiny_chat_model), DataSpec(), 512)


def client_for(loaded, **options):
    from fastapi.testclient import TestClient

    from medsft.serving import server
    from medsft.serving.pipeline import ServeOptions

    return TestClient(server.create_app(loaded, ServeOptions(**options)), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(loaded):
    return client_for(loaded, max_tokens_cap=4, max_body_bytes=20_000)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELD_VALUES = {
    "prompt": st.one_of(st.text(max_size=40), st.lists(st.text(max_size=10), max_size=3), JSON),
    "messages": st.one_of(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "bot", 3]),
                                                          "content": st.one_of(st.text(max_size=20), JSON)}), max_size=3), JSON),
    "max_tokens": st.one_of(st.integers(-5, 10), JSON), "temperature": st.one_of(st.floats(-1, 3), JSON),
    "top_p": st.one_of(st.floats(-0.5, 1.5), JSON), "top_k": st.one_of(st.integers(-3, 2**70), JSON),
    "seed": st.one_of(st.integers(-(2**70), 2**70), JSON), "stop": st.one_of(st.text(max_size=80), st.lists(st.text(max_size=70), max_size=6), JSON),
    "stream": st.one_of(st.booleans(), JSON), "min_tokens": st.one_of(st.integers(-2, 8), JSON), "n": st.one_of(st.integers(-1, 3), JSON),
    "model": st.one_of(st.sampled_from(["tiny-chat", "gpt-4", "base"]), JSON),
    "logprobs": st.one_of(st.booleans(), st.integers(-2, 30), JSON), "top_logprobs": st.one_of(st.integers(-2, 30), JSON),
    "logit_bias": st.one_of(st.dictionaries(st.sampled_from(["0", "5", "-1", "99999", "x"]), st.floats(-200, 200), max_size=3), JSON),
    "presence_penalty": st.one_of(st.floats(-3, 3), JSON), "stream_options": st.one_of(st.just({"include_usage": True}), JSON),
    "tools": JSON, "response_format": st.one_of(st.just({"type": "text"}), JSON), "max_completion_tokens": st.one_of(st.integers(-1, 8), JSON),
    "user": JSON,
}
FIELD_VALUES["messages"] = st.one_of(FIELD_VALUES["messages"], st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "developer"]),
    "content": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", 4]), "text": st.one_of(st.text(max_size=10), JSON)}),
                        max_size=3)}, optional={"name": JSON, "tool_calls": JSON}), max_size=2))
BODIES = st.one_of(
    st.fixed_dictionaries({}, optional=FIELD_VALUES).map(json.dumps).map(str.encode),
    JSON.map(json.dumps).map(str.encode),
    st.binary(max_size=60),
)


def check_response(response):
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES)
def test_generated_bodies_never_get_a_5xx(client, path, body):
    check_response(client.post(path, content=body, headers={"Content-Type": "application/json"}))


def test_still_healthy_after_the_generated_bodies(client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/v1/completions", json={"prompt": "IMPRESSION:", "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "Hi", "max_tokens": 2, "seed": 1180591620717411303424}, 400, "seed"),
    ({"prompt": "Hi", "stop": ["x" * 5000]}, 400, "stop"),
    ({"prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": ["a", "b"]}, 400, "prompt"),
    ({"prompt": "Hi", "top_k": 2**70}, 400, "top_k"),
    ({"prompt": "word " * 5000, "max_tokens": 2}, 413, "body"),
])
def test_limits_answer_before_work(client, body, status, param):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_a_long_prompt_is_refused_by_tokens(loaded):
    with client_for(loaded, max_prompt_tokens=16) as small:
        response = small.post("/v1/completions", json={"prompt": "fever " * 40, "max_tokens": 2})
        assert response.status_code == 400 and "longer than this server's 16 tokens" in response.json()["error"]["message"]


def test_stop_strings_stop_generation(loaded, client):
    whole = client.post("/v1/completions", json={"prompt": "Patient", "max_tokens": 4, "temperature": 0}).json()
    text = whole["choices"][0]["text"]
    stop = text.strip()[:2]
    with client_for(loaded, max_tokens_cap=200) as wide:
        engine = wide.app.state.engine
        before = engine.tokens
        out = wide.post("/v1/completions", json={"prompt": "Patient", "max_tokens": 200, "temperature": 0, "stop": [stop]}).json()
        assert out["choices"][0]["finish_reason"] == "stop" and out["choices"][0]["text"] == text[: text.index(stop)]
        assert engine.tokens - before <= len(text)  # it stopped where the stop string appeared, not at max_tokens


def test_a_full_queue_answers_503_with_retry_after(loaded):
    """Overload is the server's state, not the client's fault: 503 server_error with Retry-After."""
    with client_for(loaded, max_batch=1, max_queue=1, max_tokens_cap=300) as busy:
        engine = busy.app.state.engine
        long = {"prompt": "History", "max_tokens": 300, "min_tokens": 300, "temperature": 0}
        threads = [threading.Thread(target=busy.post, args=("/v1/completions",), kwargs={"json": long}) for _ in range(2)]
        threads[0].start()
        _wait(lambda: engine.steps > 0)
        threads[1].start()
        _wait(lambda: engine.depth() == 1)
        response = busy.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
        assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["type"] == "server_error" and response.json()["error"]["code"] == "overloaded"
        for t in threads:
            t.join()


def test_an_api_key_guards_every_endpoint_but_health_and_the_page(loaded):
    with client_for(loaded, api_key="s3cret") as guarded:
        assert guarded.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 401
        assert guarded.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.get("/metrics").status_code == 401
        ok = guarded.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert guarded.get("/health").status_code == 200 and guarded.get("/").status_code == 200


def test_metrics_in_the_prometheus_format(client):
    client.post("/v1/completions", json={"prompt": "IMPRESSION:", "max_tokens": 3, "temperature": 0})
    client.post("/v1/completions", json={"prompt": "x", "max_tokens": -1})
    text = client.get("/metrics").text
    for name in ("medsft_requests_total", "medsft_queue_depth", "medsft_generated_tokens_total",
                 "medsft_decode_steps_total", "medsft_time_per_token_seconds_bucket"):
        assert name in text, name
    assert 'medsft_requests_total{path="/v1/completions",status="400"}' in text
    assert 'medsft_requests_total{path="/v1/completions",status="200"}' in text


def test_batched_requests_get_their_own_greedy_and_seeded_texts(loaded):
    """Eight requests decoded together give each the text it gets alone; a seeded sample is the same in any batch."""
    from medsft.serving.engine import Engine, Job

    tok = loaded.tokenizer
    engine = Engine(loaded.model, tok, max_batch=8)
    prompts = ["Patient presents with fever", "IMPRESSION:", "Temperature 39 C.", "The patient is a 54-year-old woman",
               "PLAN:", "Heart rate", "History of", "Question: Is the patient febrile?\nAnswer:"]
    together = [Job(tok(p)["input_ids"], 12) for p in prompts]
    engine.run(together)
    for p, job in zip(prompts, together):
        alone = Job(tok(p)["input_ids"], 12)
        engine.run([alone])
        assert job.text == alone.text and job.tokens == alone.tokens
    seeded = [Job(tok(prompts[0])["input_ids"], 12, temperature=1.0, top_p=0.9, seed=11) for _ in range(2)]
    engine.run([seeded[0], *[Job(tok(p)["input_ids"], 12, temperature=1.0) for p in prompts[1:5]]])
    engine.run([seeded[1]])
    assert seeded[0].tokens == seeded[1].tokens


def test_a_request_joining_a_running_batch_gets_its_own_text(loaded):
    """Continuous batching: a request that arrives while another decodes joins its batch between steps (caches
    merged); both texts equal the ones they get alone."""
    from medsft.serving.engine import Engine, Job

    tok = loaded.tokenizer
    engine = Engine(loaded.model, tok, max_batch=8)
    first = Job(tok("Patient presents with fever")["input_ids"], 40, min_new_tokens=40)
    later = [Job(tok("IMPRESSION:")["input_ids"], 10), Job(tok("Temperature 39 C. The patient")["input_ids"], 10, temperature=1.0, seed=5)]
    engine.submit(first)
    _wait(lambda: engine.steps >= 5)
    steps = engine.steps
    for job in later:
        engine.submit(job)
    _wait(lambda: all(j.finish_reason for j in (first, *later)))
    assert engine.steps - steps < 40 + 10  # they shared the first request's steps instead of waiting for them
    for job in (first, *later):
        alone = Job(job.ids, job.max_new_tokens, job.temperature, min_new_tokens=job.min_new_tokens, seed=job.seed)
        engine.run([alone])
        assert alone.tokens == job.tokens


def _wait(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.slow
def test_disconnected_streams_free_the_worker_within_a_few_steps(tiny_chat_model):
    """Ten clients stream max_tokens 300 and hang up; a new request is answered within a few decoding steps, counted
    by the worker (/metrics), not by the clock."""
    from test_server import free_port, post

    import os
    import subprocess
    import sys
    import urllib.request

    from conftest import ROOT

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medsft", "serve", str(tiny_chat_model), "--port", str(port),
                             "--max_tokens_cap", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _up(url) or proc.poll() is not None)

        def steps():
            text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
            return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("medsft_decode_steps_total")))

        body = json.dumps({"prompt": "History", "max_tokens": 300, "min_tokens": 300, "temperature": 0, "stream": True})
        sockets = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
            sockets.append(s)
        for s in sockets:
            s.recv(64)  # the response has started
        _wait(lambda: steps() >= 3)
        for s in sockets:
            s.close()
        at_disconnect = steps()
        assert post(url + "/v1/completions", {"prompt": "x", "max_tokens": 2, "temperature": 0})[0] == 200
        assert steps() - at_disconnect <= 12, "the worker kept decoding for clients that had gone"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _up(url) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url + "/health", timeout=1)
        return True
    except OSError:
        return False
