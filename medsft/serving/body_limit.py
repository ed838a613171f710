"""The server's guard: a request-body limit enforced before the body is read (by its Content-Length, or as it
streams in), a 413 with OpenAI's error body; every response's status reported for the metrics."""

from __future__ import annotations

import json


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
