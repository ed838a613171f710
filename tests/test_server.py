"""`python -m medsft serve` on a free localhost port with the tiny model, used as clients use it."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import CHATML, ROOT

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chat_model(tiny_chat_model):
    return tiny_chat_model


def start(*args, threads: str | None = "1"):
    """`python -m medsft serve ARGS` on a free port, once /health answers: (url, process)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"OMP_NUM_THREADS": threads} if threads else {})}
    proc = subprocess.Popen([sys.executable, "-m", "medsft", "serve", *map(str, args), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(proc.stderr.read())
            time.sleep(0.2)
    return url, proc


@pytest.fixture(scope="module")
def server(chat_model):
    url, proc = start(chat_model, "--max_tokens_cap", "300")
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def post(url, body, raw=False):
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def greedy(chat_model, prompt, n):
    from transformers import AutoModelForCausalLM

    from medsft.generation.completion import generate
    from medsft.models.tokenizer import load_tokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(chat_model).eval(), load_tokenizer(str(chat_model))
    return generate(model, tok, [prompt], max_new_tokens=n)[0]


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0] + "/v1", api_key="unused")


def test_binds_localhost_by_default(server):
    assert "on http://127.0.0.1:" in server[1].stdout.readline()


def test_completion_with_the_openai_client(client, chat_model):
    out = client.completions.create(model="tiny-chat", prompt="Patient presents with fever", max_tokens=8, temperature=0)
    assert out.choices[0].text == greedy(chat_model, "Patient presents with fever", 8)
    assert out.choices[0].finish_reason in ("stop", "length") and out.usage.completion_tokens <= 8
    assert [m.id for m in client.models.list()] == ["tiny-chat"]


def test_streaming_completion_equals_the_whole(client):
    whole = client.completions.create(model="tiny-chat", prompt="IMPRESSION:", max_tokens=12, temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny-chat", prompt="IMPRESSION:", max_tokens=12, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_chat_and_chat_streaming(client):
    messages = [{"role": "user", "content": "Is the patient tachycardic?"}]
    out = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=6, temperature=0)
    assert out.choices[0].message.role == "assistant" and isinstance(out.choices[0].message.content, str)
    stream = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=6, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == out.choices[0].message.content


def test_seeded_sampling_is_reproducible(client):
    runs = [client.completions.create(model="tiny-chat", prompt="Plan:", max_tokens=10, temperature=1.0, seed=s).choices[0].text
            for s in (5, 5, 6)]
    assert runs[0] == runs[1] != runs[2]


def test_stop_sequence_cuts_the_text(client):
    whole = client.completions.create(model="tiny-chat", prompt="Patient", max_tokens=20, temperature=0).choices[0].text
    stop = whole.strip()[3:5]
    out = client.completions.create(model="tiny-chat", prompt="Patient", max_tokens=20, temperature=0, stop=[stop])
    assert out.choices[0].text == whole[: whole.index(stop)] and out.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, "body"),
    ({"model": "tiny-chat"}, 400, "prompt"),
    ({"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"prompt": "x", "max_tokens": 100000}, 400, "max_tokens"),
    ({"prompt": "word " * 600, "max_tokens": 10}, 400, "prompt"),
    ({"prompt": "x", "temperature": 5}, 400, "temperature"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
])
def test_bad_requests_name_the_field(server, body, status, param):
    code, payload = post(server[0] + "/v1/completions", body, raw=isinstance(body, bytes))
    assert code == status and payload["error"]["param"] == param, payload
    assert post(server[0] + "/v1/completions", {"prompt": "still", "max_tokens": 2})[0] == 200  # still serving


def test_health_answers_during_a_long_generation_and_requests_do_not_mix(server, chat_model):
    url = server[0]
    body = json.dumps({"prompt": "History", "max_tokens": 300, "min_tokens": 300, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
    results = {}

    def complete(prompt):
        results[prompt] = post(url + "/v1/completions", {"prompt": prompt, "max_tokens": 8, "temperature": 0})[1]

    with urllib.request.urlopen(req, timeout=120) as stream:
        assert stream.readline().startswith(b"data: ")  # the long generation is under way
        started = time.perf_counter()
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            assert json.loads(r.read())["status"] == "ok"
        health_seconds = time.perf_counter() - started
        threads = [threading.Thread(target=complete, args=(p,)) for p in ("Fever", "Cough", "Rash")]
        for t in threads:
            t.start()
        rest = stream.read().decode()
        generation_seconds = time.perf_counter() - started
        assert rest.rstrip().endswith("data: [DONE]")
        # a blocked event loop would have answered /health only when the 300 tokens were done
        assert health_seconds < 0.5 * generation_seconds, (health_seconds, generation_seconds)
    for t in threads:
        t.join()
    for p in ("Fever", "Cough", "Rash"):  # queued behind the long one, each gets exactly its own text
        assert results[p]["choices"][0]["text"] == greedy(chat_model, p, 8)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM} (apt-get install chromium)")
def test_web_page_generates_in_a_browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server[0] + "/")
        page.fill("#prompt", "Patient presents with fever")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "12")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('done') || "
                               "document.getElementById('status').textContent.startsWith('stopped')", timeout=30000)
        assert page.text_content("#completion").strip()
        browser.close()


def test_chats_are_tokenized_as_training_tokenizes_them_one_bos(tiny_model):
    """A Llama-style template that writes the BOS itself, on a tokenizer that also adds one: rendering the template
    to text and tokenizing it again (the old server) doubled the BOS; the server now uses training's ids."""
    from fastapi.testclient import TestClient
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoModelForCausalLM

    from medsft.data import templates
    from medsft.serving import server
    from medsft.models.inference import Loaded
    from medsft.recipe.keys import DataSpec
    from medsft.models.tokenizer import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)])
    tok.chat_template = "{{ bos_token }}" + CHATML
    messages = [{"role": "user", "content": "Fever?"}]
    ids = templates.chat_ids(tok, messages, add_generation_prompt=True)
    assert ids[0] == bos and ids[1] != bos  # one BOS, from the template
    assert tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))["input_ids"][:2] == [bos, bos]
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    client = TestClient(server.create_app(Loaded(model, tok, "tiny", DataSpec(), 512)))
    reply = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2, "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["prompt_tokens"] == len(ids)


def test_serve_a_lora_run_as_itself_as_base_and_beside_another_adapter(write_recipe, tiny_model, tmp_path):
    from openai import OpenAI

    from conftest import run_cli
    from test_server_api import _lora

    recipe = write_recipe(learning_rate=5e-2, eval_after_train=False)
    trained = run_cli(recipe)
    assert trained.returncode == 0, trained.stderr[-2000:]
    cardio = _lora(tiny_model, tmp_path / "cardio", 3)
    url, proc = start(tmp_path / "out", "--adapter", f"cardio={cardio}")
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused")
        assert [m.id for m in client.models.list()] == ["out", "base", "cardio"]
        texts = {}
        threads = [threading.Thread(target=lambda n=name: texts.__setitem__(n, client.completions.create(
            model=n, prompt="Question: Is aspirin useful?", max_tokens=8, temperature=0).choices[0].text))
                   for name in ("out", "base", "cardio")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(texts.values())) == 3, texts
        base = client.completions.create(model="base", prompt="Question: Is aspirin useful?", max_tokens=8, temperature=0)
        assert base.choices[0].text == texts["base"] and base.model == "base"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
