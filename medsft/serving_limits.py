"""The server's guard and gauges: a request-body limit enforced before the body is read, and Prometheus metrics
(requests by status, queue depth, tokens generated, decoding steps, time per token) as vLLM and TGI expose them."""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

PATHS = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/metrics", "/health", "/")


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over max_bytes, by its Content-Length or as it streams in, so a huge
    body is never read into memory nor parsed; every response's status is reported to on_response(path, status)."""

    def __init__(self, app, max_bytes: int, on_response=lambda path, status: None):
        self.app, self.max_bytes, self.on_response = app, max_bytes, on_response

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = {"status": None}

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._refuse(scope, send_tracked)
        received = 0

        async def receive_counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, receive_counted, send_tracked)
        except _TooLarge:
            if sent["status"] is None:
                await self._refuse(scope, send_tracked)
        finally:
            self.on_response(scope.get("path", ""), sent["status"])

    async def _refuse(self, scope, send):
        body = json.dumps({"error": {"message": f"request body is over this server's {self.max_bytes} bytes",
                                     "type": "invalid_request_error", "param": "body", "code": None}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


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
