"""A bounded load test of `medsft serve`, batched against one-at-a-time, side by side in one run.

    python bench/serve_load.py [--model smollm2-135m-instruct] [--requests 200] [--concurrency 8] [--max_tokens 16]

Phase 1, for `--max_batch 1` (one request at a time) and the default batching: 200 requests, 8 at a time, a quarter
malformed (invalid JSON, no prompt, negative max_tokens, a temperature out of range, an unknown model); prints
requests/s, p50/p99 latency of the valid and the malformed ones and the status counts, then the ratios.
Phase 2, hostile, against the batching server: the same load where 20% of the clients hang up mid-stream and 5%
send an oversized body, while a prober calls /health every 50 ms; prints the status counts, /health p99 and the
server's RSS growth. A 5xx anywhere, or the server unhealthy afterwards, exits 1.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max_tokens", type=int, default=16)
    args = parser.parse_args()
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
