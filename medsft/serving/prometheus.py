"""The server's gauges in the Prometheus format, as vLLM and TGI expose them: requests by path and status, queue
depth, whether the worker runs, the running batch's cache columns, tokens generated, decoding steps, time per token."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics", "/health", "/")


class _EngineCounts:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        yield CounterMetricFamily("medsft_generated_tokens", "Tokens generated", value=self.engine.tokens)
        yield CounterMetricFamily("medsft_decode_steps", "Batched forward passes of the generation worker", value=self.engine.steps)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.requests = Counter("medsft_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry)
        Gauge("medsft_queue_depth", "Requests waiting for the generation worker", registry=self.registry).set_function(engine.depth)
        Gauge("medsft_worker_up", "1 while the generation worker runs, 0 while it is being restarted",
              registry=self.registry).set_function(lambda: float(engine.alive()))
        Gauge("medsft_batch_cache_columns", "Columns of the running batch's KV cache: its longest live row",
              registry=self.registry).set_function(lambda: engine.width)
        self.per_token = Histogram("medsft_time_per_token_seconds", "Seconds per generated token of a request, queueing included",
                                   buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0), registry=self.registry)
        self.registry.register(_EngineCounts(engine))

    def count(self, path: str, status: int | None) -> None:
        self.requests.labels(path if path in PATHS else "other", str(status or 0)).inc()

    def finished(self, job, seconds: float) -> None:
        if job.tokens:
            self.per_token.observe(seconds / len(job.tokens))

    def render(self) -> bytes:
        return generate_latest(self.registry)
