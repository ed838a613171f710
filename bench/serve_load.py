"""A bounded load test of `medsft serve`: 200 requests, 8 at a time, a quarter of them malformed.

    python bench/serve_load.py [--model smollm2-135m-instruct] [--requests 200] [--concurrency 8] [--max_tokens 16]

Starts the server on a free localhost port, sends the requests (valid completions with varied prompts, and
malformed ones: invalid JSON, no prompt, negative max_tokens, a temperature out of range, an unknown model) and
prints requests/s, p50/p99 latency of the valid and the malformed requests, the counts of 2xx/4xx/5xx, and whether
the server is still healthy afterwards. 5xx must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
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
    return status, time.perf_counter() - start


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max_tokens", type=int, default=16)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "medsft", "serve", args.model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    sys.exit(f"server exited:\n{server.stderr.read()[-2000:]}")
                time.sleep(0.5)
        bodies = []
        for i in range(args.requests):
            if i % 4 == 3:
                bodies.append((False, MALFORMED[(i // 4) % len(MALFORMED)]))
            else:
                body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": args.max_tokens, "temperature": 0.7, "seed": i}
                bodies.append((True, json.dumps(body).encode()))
        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(lambda b: (b[0], *send(base + "/v1/completions", b[1])), bodies))
        wall = time.perf_counter() - start
        healthy = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read()).get("status") == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)
    counts = {f"{k}xx": sum(1 for _, s, _ in results if s // 100 == k) for k in (2, 4, 5)}
    valid = [t for ok, _, t in results if ok]
    bad = [t for ok, _, t in results if not ok]
    print(f"{args.requests} requests ({len(bad)} malformed), {args.concurrency} at a time, model {args.model}, "
          f"max_tokens {args.max_tokens}, {os.cpu_count()} cores")
    print(f"wall {wall:.1f} s, {args.requests / wall:.2f} requests/s")
    print(f"latency valid:     p50 {pct(valid, 50):.3f} s  p99 {pct(valid, 99):.3f} s")
    print(f"latency malformed: p50 {pct(bad, 50):.3f} s  p99 {pct(bad, 99):.3f} s")
    print(f"status: {counts['2xx']} 2xx, {counts['4xx']} 4xx, {counts['5xx']} 5xx; healthy after: {healthy}")
    if counts["5xx"] or not healthy or counts["4xx"] != len(bad):
        sys.exit(1)


if __name__ == "__main__":
    main()
