"""Load tests of `medsft serve`: bounded phases side by side, the engines side by side, and a soak.

    python bench/serve_load.py [--model smollm2-135m-instruct] [--requests 200] [--concurrency 8] [--max_tokens 16]
    python bench/serve_load.py --engines 120      # medsft's engine vs transformers' continuous batching, same load
    python bench/serve_load.py --soak 600         # the HTTP server under sustained load: tokens/s and RSS per window

Phase 1, for `--max_batch 1` (one request at a time) and the default batching: 200 requests, 8 at a time, a quarter
malformed (invalid JSON, no prompt, negative max_tokens, a temperature out of range, an unknown model); prints
requests/s, p50/p99 latency of the valid and the malformed ones and the status counts, then the ratios.
Phase 2, hostile, against the batching server: the same load where 20% of the clients hang up mid-stream and 5%
send an oversized body, while a prober calls /health every 50 ms; prints the status counts, /health p99 and the
server's RSS growth. A 5xx anywhere, or the server unhealthy afterwards, exits 1.

The sustained load of `--engines` and `--soak`: 8 clients sending completions back to back, client i starting 1.5 s
after client i-1, each request 48 tokens (`max_tokens` = `min_tokens` = 48, so no request ends early), sampled
(temperature 0.7, top_k 50, its own seed). `--engines SECONDS` runs it in this process for SECONDS against
medsft's engine (`medsft.serving.engine.Engine`, max_batch 8) and then against transformers' continuous batching
(`model.init_continuous_batching()`: paged KV cache; EOS disabled for the same 48 tokens, since it has no
min_tokens), and prints tokens/s, request p50/p99 latency and RSS growth for each, and their ratio.
`--soak SECONDS` runs it against `python -m medsft serve` over HTTP and prints per 20 s window the completion
tokens/s and the server's RSS, then the last minute's tokens/s over the second minute's and the RSS growth from the
second minute to the end; a 5xx exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["Patient presents with fever and a persistent cough", "IMPRESSION:", "HISTORY OF PRESENT ILLNESS:",
           "The patient is a 54-year-old woman with", "PLAN: Continue", "Chest x-ray shows"]
MALFORMED = [b"{not json", json.dumps({"max_tokens": 8}).encode(), json.dumps({"prompt": "x", "max_tokens": -3}).encode(),
             json.dumps({"prompt": "x", "temperature": 9}).encode(), json.dumps({"prompt": "x", "model": "nope"}).encode()]
OVERSIZED = json.dumps({"prompt": "fever " * 400_000, "max_tokens": 4}).encode()  # 2.4 MB, over the 1 MB limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(url: str, body: bytes) -> tuple[int, float]:
    start = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    except OSError:  # the server closed an oversized upload before reading it: it answered 413 first
        status = 413
    return status, time.perf_counter() - start


def hang_up(port: int, body: bytes) -> tuple[int, float]:
    """Start a streaming request, read its first bytes, and disconnect."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int(s.recv(64).split()[1])
    return status, time.perf_counter() - start


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, model: str, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "medsft", "serve", model, "--port", str(self.port), *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(600):
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    sys.exit(f"server exited:\n{self.proc.stderr.read()[-2000:]}")
                time.sleep(0.5)

    def healthy(self) -> bool:
        return json.loads(urllib.request.urlopen(self.url + "/health", timeout=10).read()).get("status") == "ok"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def workload(args, hostile: bool) -> list[tuple[str, bytes]]:
    work = []
    for i in range(args.requests):
        if hostile and i % 20 == 7:
            work.append(("oversized", OVERSIZED))
        elif i % 4 == 3:
            work.append(("malformed", MALFORMED[(i // 4) % len(MALFORMED)]))
        else:
            hangs = hostile and i % 5 == 1
            body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": args.max_tokens * (8 if hangs else 1),
                    "temperature": 0.7, "seed": i, "stream": hangs}
            work.append(("hang-up" if hangs else "valid", json.dumps(body).encode()))
    return work


def run(server: Server, args, hostile: bool) -> dict:
    def one(item):
        kind, body = item
        status, seconds = hang_up(server.port, body) if kind == "hang-up" else send(server.url + "/v1/completions", body)
        return kind, status, seconds

    probes, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            probes.append(_get(server.url + "/health"))
            time.sleep(0.05)

    prober = threading.Thread(target=probe)
    rss_before = rss_mb(server.proc.pid)
    prober.start()
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        results = list(pool.map(one, workload(args, hostile)))
    wall = time.perf_counter() - start
    stop.set()
    prober.join()
    time.sleep(1.0)
    return {"results": results, "wall": wall, "health_p99": pct(probes, 99), "rss_growth": rss_mb(server.proc.pid) - rss_before,
            "healthy": server.healthy()}


def _get(url: str) -> float:
    start = time.perf_counter()
    urllib.request.urlopen(url, timeout=30).read()
    return time.perf_counter() - start


def report(name: str, out: dict, n: int) -> dict:
    results = out["results"]
    counts = {f"{k}xx": sum(1 for _, s, _ in results if s // 100 == k) for k in (2, 4, 5)}
    valid = [t for kind, _, t in results if kind == "valid"]
    bad = [t for kind, _, t in results if kind == "malformed"]
    rate = n / out["wall"]
    print(f"{name:22s} {rate:6.2f} req/s  valid p50 {pct(valid, 50):6.2f} s p99 {pct(valid, 99):6.2f} s  "
          f"malformed p99 {pct(bad, 99):.3f} s  {counts['2xx']} 2xx {counts['4xx']} 4xx {counts['5xx']} 5xx  "
          f"/health p99 {out['health_p99'] * 1000:.0f} ms  RSS +{out['rss_growth']:.0f} MB  healthy {out['healthy']}")
    return {"rate": rate, "p99": pct(valid, 99), "5xx": counts["5xx"], "healthy": out["healthy"]}


CLIENTS, STAGGER, SUSTAINED_TOKENS, WINDOW = 8, 1.5, 48, 20.0


def sustained(seconds: float, one_request) -> tuple[list[tuple[float, float, int, int]], float]:
    """CLIENTS threads calling one_request(client, n) back to back until `seconds` have passed, client i starting
    i * STAGGER seconds in; ([(start, end, tokens, status)], wall seconds)."""
    done, lock, start = [], threading.Lock(), time.perf_counter()

    def client(i: int) -> None:
        time.sleep(i * STAGGER)
        n = 0
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            tokens, status = one_request(i, n)
            with lock:
                done.append((t0 - start, time.perf_counter() - start, tokens, status))
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done, time.perf_counter() - start


def own_rss_mb() -> float:
    return rss_mb(os.getpid())


def medsft_engine_load(model, tokenizer, prompts, seconds):
    from medsft.serving.engine import Engine, Job

    engine = Engine(model, tokenizer, max_batch=CLIENTS)

    def one(i, n):
        finished = threading.Event()
        job = Job(prompts[(i + n) % len(prompts)], SUSTAINED_TOKENS, temperature=0.7, top_k=50,
                  min_new_tokens=SUSTAINED_TOKENS, seed=1000 * i + n, on_event=lambda text, end: end and finished.set())
        engine.submit(job)
        finished.wait()
        return len(job.tokens), 200

    return sustained(seconds, one)


def transformers_load(model, tokenizer, prompts, seconds):
    """The same load through transformers' ContinuousBatchingManager (one dispatcher thread routes its results)."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=SUSTAINED_TOKENS, do_sample=True, temperature=0.7, top_k=50,
                              eos_token_id=-1, pad_token_id=tokenizer.pad_token_id)
    manager = model.init_continuous_batching(generation_config=config)
    manager.start()
    waiting, lock, results = {}, threading.Lock(), {}
    stop = threading.Event()

    def dispatch():
        while not stop.is_set():
            result = manager.get_result(timeout=0.1)
            if result is not None and result.is_finished():
                with lock:
                    results[result.request_id] = result
                    waiting.pop(result.request_id).set()

    dispatcher = threading.Thread(target=dispatch, daemon=True)
    dispatcher.start()

    def one(i, n):
        finished, rid = threading.Event(), f"c{i}-{n}"
        with lock:
            waiting[rid] = finished
        manager.add_request(prompts[(i + n) % len(prompts)], request_id=rid, max_new_tokens=SUSTAINED_TOKENS)
        finished.wait()
        with lock:
            return len(results.pop(rid).generated_tokens), 200

    try:
        return sustained(seconds, one)
    finally:
        stop.set()
        manager.stop(block=True)


def summarize(name: str, done, wall, rss_growth) -> dict:
    latencies = [end - start for start, end, _, _ in done]
    rate = sum(tokens for *_, tokens, _ in done) / wall
    print(f"{name:34s} {rate:7.1f} tokens/s  {len(done):4d} requests  latency p50 {pct(latencies, 50):5.2f} s "
          f"p99 {pct(latencies, 99):5.2f} s  RSS +{rss_growth:.0f} MB")
    return {"rate": rate, "p50": pct(latencies, 50), "p99": pct(latencies, 99)}


def compare_engines(args) -> None:
    """medsft's engine and transformers' continuous batching under the same sustained load, one after the other in
    this process (the same model object, the same prompts, the same threads)."""
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT))
    from medsft.models import locate
    from medsft.models.tokenizer import load_tokenizer

    path = locate.resolve(args.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    print(f"sustained load, {args.engines:.0f} s each: {CLIENTS} clients back to back, staggered {STAGGER} s, "
          f"{SUSTAINED_TOKENS} tokens a request, sampled; {torch.get_num_threads()} threads, model {args.model}")
    out = {}
    loads = (("medsft engine", medsft_engine_load), ("transformers continuous batching", transformers_load))
    for _, load in loads:  # warm-up: first allocations and kernels are not the engines' steady state
        load(model, tokenizer, prompts, 2 * STAGGER)
    for name, load in loads:
        before = own_rss_mb()
        done, wall = load(model, tokenizer, prompts, args.engines)
        out[name] = summarize(name, done, wall, own_rss_mb() - before)
    ours, theirs = out["medsft engine"], out["transformers continuous batching"]
    print(f"\nmedsft / transformers: {ours['rate'] / theirs['rate']:.2f}x tokens/s, p50 latency {ours['p50']:.2f} vs "
          f"{theirs['p50']:.2f} s, p99 {ours['p99']:.2f} vs {theirs['p99']:.2f} s")


def soak(args) -> None:
    server = Server(args.model)
    samples, stop = [], threading.Event()

    def sample_rss():
        while not stop.wait(1.0):
            samples.append((time.perf_counter() - t0, rss_mb(server.proc.pid)))

    def one(i, n):
        body = json.dumps({"prompt": PROMPTS[(i + n) % len(PROMPTS)], "max_tokens": SUSTAINED_TOKENS,
                           "min_tokens": SUSTAINED_TOKENS, "temperature": 0.7, "top_k": 50, "seed": 1000 * i + n}).encode()
        req = urllib.request.Request(server.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                return json.loads(r.read())["usage"]["completion_tokens"], r.status
        except urllib.error.HTTPError as e:
            return 0, e.code

    t0 = time.perf_counter()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    try:
        done, wall = sustained(args.soak, one)
    finally:
        stop.set()
        server.stop()
    print(f"soak: {args.soak:.0f} s, {CLIENTS} clients back to back, staggered {STAGGER} s, {SUSTAINED_TOKENS} tokens a "
          f"request (min_tokens too), sampled; model {args.model}; {len(done)} requests\n")
    print("| time | " + " | ".join(f"{(k + 1) * WINDOW:.0f} s" for k in range(int(wall // WINDOW))) + " |")
    print("|---|" + "---:|" * int(wall // WINDOW))
    rates, rss = [], []
    for k in range(int(wall // WINDOW)):
        low, high = k * WINDOW, (k + 1) * WINDOW
        rates.append(sum(tokens for _, end, tokens, _ in done if low <= end < high) / WINDOW)
        rss.append(max((mb for t, mb in samples if low <= t < high), default=float("nan")))
    print("| tokens/s | " + " | ".join(f"{r:.1f}" for r in rates) + " |")
    print("| RSS MB | " + " | ".join(f"{m:.0f}" for m in rss) + " |")

    def minute(lo: float, hi: float) -> float:
        return sum(tokens for _, end, tokens, _ in done if lo <= end < hi) / (hi - lo)

    second, last = minute(60, 120), minute(wall - 60, wall)
    rss_second = [mb for t, mb in samples if 60 <= t < 120]
    growth = samples[-1][1] - (sum(rss_second) / len(rss_second)) if rss_second else float("nan")
    statuses = {}
    for *_, status in done:
        statuses[status] = statuses.get(status, 0) + 1
    print(f"\nlast minute / second minute: {last / second:.2f}x tokens/s ({last:.1f} vs {second:.1f}); RSS from the "
          f"second minute to the end: {growth:+.0f} MB; statuses {statuses}")
    if any(status >= 500 for status in statuses):
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max_tokens", type=int, default=16)
    parser.add_argument("--engines", type=float, default=None, help="compare the engines for this many seconds each")
    parser.add_argument("--soak", type=float, default=None, help="soak the HTTP server for this many seconds")
    args = parser.parse_args()
    if args.engines:
        return compare_engines(args)
    if args.soak:
        return soak(args)
    print(f"{args.requests} requests, {args.concurrency} at a time, model {args.model}, max_tokens {args.max_tokens}, "
          f"{os.cpu_count()} cores")
    summary = {}
    for name, extra in (("one at a time", ("--max_batch", "1")), ("batched (max_batch 8)", ())):
        server = Server(args.model, *extra)
        try:
            summary[name] = report(name, run(server, args, hostile=False), args.requests)
            if name.startswith("batched"):
                summary["hostile"] = report("batched, hostile", run(server, args, hostile=True), args.requests)
        finally:
            server.stop()
    one, batched = summary["one at a time"], summary["batched (max_batch 8)"]
    print(f"\nbatched / one at a time: {batched['rate'] / one['rate']:.2f}x requests/s, p99 {batched['p99']:.2f} s vs {one['p99']:.2f} s")
    if any(s["5xx"] or not s["healthy"] for s in summary.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
