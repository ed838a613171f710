"""The OpenAI API as this server reads it: the request bodies (validated by pydantic, a 400 naming the field; a field
the server does not implement is refused by name, never dropped) and the error body.

Errors say whose they are: 4xx (`invalid_request_error`, `invalid_api_key`, `model_not_found`) only for what the
client sent; the server's own failures are 5xx `server_error`, 503 with Retry-After when it is overloaded or its
worker is down."""

from __future__ import annotations

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
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]  # OpenAI's range
MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's top_logprobs

# Fields a client may send that cannot change what it gets back: accepted and ignored. Any other field this server
# does not implement is refused with a 400 naming it, never dropped in silence.
IGNORED = ("user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "parallel_tool_calls")
# Fields accepted only at a value that asks for nothing this server lacks.
ONLY = {"tool_choice": ("none",), "response_format": ({"type": "text"},), "echo": (False,), "best_of": (1,),
        "suffix": (None, ""), "modalities": (["text"],), "functions": ([],), "tools": ([],)}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False  # a last chunk with the usage, as OpenAI sends it


class Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")  # checked by `unsupported`: ignored by name or refused

    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1_000_000)  # extras beside OpenAI's fields (as vLLM names them): 0 keeps every token,
    min_tokens: int = Field(default=0, ge=0)  # and no end of reply before min_tokens
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=300)] | None = None
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def asked_max_tokens(self) -> int | None:
        return self.max_tokens

    def logprobs_asked(self) -> int | None:
        """How many alternatives to give with each token's log-probability (None: no log-probabilities)."""
        return None

    def unsupported(self) -> ApiError | None:
        """A 400 naming the first field sent that this server does not implement (tools, response_format, ...)."""
        for key, value in (self.model_extra or {}).items():
            if key in IGNORED or value is None or (key in ONLY and value in ONLY[key]):
                continue
            return ApiError(400, f"{key} is not supported by this server; leave it out", key)
        return None

    def bias(self, vocabulary: int) -> dict[int, float]:
        """logit_bias as token ids: keys are token ids (as strings, OpenAI's form) within the vocabulary."""
        out = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.isdigit() or int(key) >= vocabulary:
                raise ApiError(400, f"logit_bias: {key!r} is not a token id of this model (0 to {vocabulary - 1})", "logit_bias")
            out[int(key)] = value
        return out


class CompletionRequest(Sampling):
    prompt: (str | Annotated[list[str], Field(min_length=1, max_length=1)]
             | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
             | Annotated[list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]], Field(min_length=1, max_length=1)])
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)  # the legacy API's: k alternatives per token

    def logprobs_asked(self) -> int | None:
        return self.logprobs

    def prompt_ids(self) -> list[int] | None:
        """The prompt as token ids, when the client sent ids (OpenAI's form for a tokenized prompt)."""
        prompt = self.prompt[0] if isinstance(self.prompt, list) and isinstance(self.prompt[0], list) else self.prompt
        return prompt if isinstance(prompt, list) and isinstance(prompt[0], int) else None


class Part(BaseModel):
    """A part of a message's content: text is read; any other kind (image_url, input_audio, file) is refused."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name is passed to the template; tool_calls and the like are refused
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[Part], Field(max_length=64)] | None = None


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=512)]
    max_completion_tokens: int | None = Field(default=None, ge=1)  # OpenAI's newer name for max_tokens
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    # template keywords on top of the run's own (Qwen3's enable_thinking), as vLLM and `transformers serve` take them
    chat_template_kwargs: dict[str, Any] | None = None

    def asked_max_tokens(self) -> int | None:
        if self.max_completion_tokens is None:
            return self.max_tokens
        if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
            raise ApiError(400, "max_tokens and max_completion_tokens differ; send one", "max_completion_tokens")
        return self.max_completion_tokens

    def logprobs_asked(self) -> int | None:
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def conversation(self) -> list[dict[str, str]]:
        """The messages as the chat template reads them: text parts joined by newlines (as vLLM joins them), a
        developer message as the system's; anything else a message carries is a 400 naming it."""
        out = []
        for i, m in enumerate(self.messages):
            for key, value in (m.model_extra or {}).items():
                if key != "name" and value is not None:
                    raise ApiError(400, f"messages.{i}.{key} is not supported by this server; leave it out", "messages")
            if m.content is None:
                raise ApiError(400, f"messages.{i}.content: missing", "messages")
            parts = [m.content] if isinstance(m.content, str) else []
            for j, part in enumerate([] if isinstance(m.content, str) else m.content):
                if part.type == "text" and part.text is None:
                    raise ApiError(400, f"messages.{i}.content.{j}.text: missing", "messages")
                if part.type != "text":
                    raise ApiError(400, f"messages.{i}.content.{j}: {part.type} parts are not supported; this model "
                                        "reads text parts only", "messages")
                parts.append(part.text)
            name = (m.model_extra or {}).get("name")
            out.append({"role": "system" if m.role == "developer" else m.role, "content": "\n".join(parts),
                        **({"name": name} if isinstance(name, str) else {})})
        return out


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
