"""The OpenAI API as this server speaks it: the request bodies (validated by pydantic, a 400 naming the field), the
error body, and the bodies of /v1/completions and /v1/chat/completions, whole or streamed as server-sent events.

Errors say whose they are: 4xx (`invalid_request_error`, `invalid_api_key`, `model_not_found`) only for what the
client sent; the server's own failures are 5xx `server_error`, 503 with Retry-After when it is overloaded or its
worker is down."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_STOPS, MAX_STOP_CHARS = 4, 64
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's range


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 headers: dict[str, str] | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.headers, self.code = status, message, param, kind, headers, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def server_error(message: str) -> ApiError:
    """The server failed (the model raised, CUDA ran out of memory): nothing the client can fix by changing it."""
    return ApiError(500, message, None, "server_error")


def unavailable(message: str, retry_after: int, code: str) -> ApiError:
    """The server cannot take the request now (overloaded, or its worker is being restarted): retry later."""
    return ApiError(503, message, None, "server_error", {"Retry-After": str(max(1, retry_after))}, code)


Stop = Annotated[str, StringConstraints(max_length=MAX_STOP_CHARS)]


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, logit_bias, ...)

    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1_000_000)  # extras beside OpenAI's fields (as vLLM names them): 0 keeps every token,
    min_tokens: int = Field(default=0, ge=0)  # and no end of reply before min_tokens
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=512)]
    # template keywords on top of the run's own (Qwen3's enable_thinking), as vLLM and `transformers serve` take them
    chat_template_kwargs: dict[str, Any] | None = None


def validation_error(errors: list[dict]) -> ApiError:
    """pydantic's first complaint as a 400 naming the field ("messages.1.role: ...")."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ApiError(400, "request body is not valid JSON", "body")
    # pydantic's location names union members ("str", "list[str]"): the field is the first name, the message keeps
    # the indexes ("messages.1.role").
    loc = [str(p) for p in first.get("loc", []) if p != "body"]
    param = loc[0] if loc else "body"
    where = ".".join(p for p in loc if p.isidentifier() or p.isdigit()) or param
    message = "missing" if first.get("type") == "missing" else first.get("msg", "invalid value")
    return ApiError(400, f"{where}: {message}", param)


@dataclass
class Reply:
    """The body of one answer, whole or as stream chunks, in the completion or the chat shape."""

    chat: bool
    stream: bool
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.id = self.id or ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]

    def _body(self, choice: dict) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if self.stream else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [choice]}

    def whole(self, text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish} if self.chat
                  else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish})
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        return {**self._body(choice), "usage": usage}

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False) -> str:
        if self.chat:
            delta = {"role": "assistant"} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return event(self._body(choice))


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"
