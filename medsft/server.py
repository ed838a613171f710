"""An OpenAI-compatible HTTP server for a run or a model: /v1/completions, /v1/chat/completions, /v1/models,
/metrics (Prometheus), /health and a self-contained web page at /.

Limits come before work: a body over `max_body_bytes` is refused (413) before it is read, every field is validated by
the pydantic models (400 naming it), the prompt is tokenized off the event loop and checked against the model's
context, and a full queue answers 429 with Retry-After. Generation runs in `engine.Engine`: concurrent requests
share forward passes, a client that goes away stops its generation within one decoding step, stop strings stop
generation. With an API key, every endpoint but /health and the page wants `Authorization: Bearer KEY`. Nothing a
client sends produces a 5xx.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from medsft import encode
from medsft.engine import Engine, Job
from medsft.inference import Loaded
from medsft.serving_limits import BodyLimit, Metrics

PAGE = Path(__file__).with_name("page.html")
MAX_STOPS, MAX_STOP_CHARS = 4, 64
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's range


@dataclass
class ServeOptions:
    max_tokens_cap: int = 1024  # largest max_tokens a request may ask for
    max_batch: int = 8  # requests decoded together (1: one at a time)
    max_queue: int = 64  # requests waiting; more get 429
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context
    timeout: float = 300.0  # seconds a request may wait and generate
    api_key: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_request_error",
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


Stop = Annotated[str, StringConstraints(max_length=MAX_STOP_CHARS)]


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, logit_bias, ...)

    model: Annotated[str, StringConstraints(max_length=256)] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1_000_000)  # extras beside OpenAI's fields (as vLLM names them): 0 keeps every token,
    min_tokens: int = Field(default=0, ge=0)  # and no EOS before min_tokens
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


class CompletionRequest(Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1, max_length=512)]


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": e.message, "type": e.code, "param": e.param, "code": None}},
                        status_code=e.status, headers=e.headers)


def create_app(loaded: Loaded, options: ServeOptions | None = None) -> FastAPI:
    options = options or ServeOptions()
    app = FastAPI(title="medsft", docs_url=None, redoc_url=None)
    tokenizer, served = loaded.tokenizer, Path(loaded.name).name or loaded.name
    engine = Engine(loaded.model, tokenizer, options.max_batch, options.max_queue)
    metrics = Metrics(engine)
    app.state.engine = engine
    tokenizing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="medsft-tokenize")
    max_prompt = min(x for x in (options.max_prompt_tokens, loaded.context, 10**9) if x is not None)
    app.add_middleware(BodyLimit, max_bytes=options.max_body_bytes, on_response=metrics.count)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):  # unknown paths, methods, undecodable bodies
        param = "body" if e.status_code == 400 else None
        return _error(ApiError(e.status_code, str(e.detail), param, headers=getattr(e, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(ApiError(400, "request body is not valid JSON", "body"))
        # pydantic's location names union members ("str", "list[str]"): the field is the first name, the message keeps
        # the indexes ("messages.1.role").
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        param = loc[0] if loc else "body"
        where = ".".join(p for p in loc if p.isidentifier() or p.isdigit()) or param
        message = "missing" if first.get("type") == "missing" else first.get("msg", "invalid value")
        return _error(ApiError(400, f"{where}: {message}", param))

    async def authorized(request: Request) -> None:
        if options.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {options.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", None, "invalid_api_key")

    async def job_for(req: Sampling, prompt: str | list[int]) -> Job:
        if req.model not in (None, served, loaded.name):
            raise ApiError(404, f"model '{req.model}' is not served here; this server serves '{served}'", "model", "model_not_found")
        max_tokens = req.max_tokens if req.max_tokens is not None else min(256, options.max_tokens_cap)
        if max_tokens > options.max_tokens_cap:
            raise ApiError(400, f"max_tokens {max_tokens} is above this server's cap of {options.max_tokens_cap}", "max_tokens")
        if req.min_tokens > max_tokens:
            raise ApiError(400, f"min_tokens {req.min_tokens} is above max_tokens {max_tokens}", "min_tokens")
        if isinstance(prompt, str):
            if len(prompt) > 8 * max_prompt:  # no tokenizer yields fewer than one token per 8 characters of prose
                raise ApiError(400, f"prompt is longer than this server's {max_prompt} tokens", "prompt")
            loop = asyncio.get_running_loop()
            prompt = (await loop.run_in_executor(tokenizing, tokenizer, prompt))["input_ids"]
        ids = prompt or engine.stops[:1]  # an empty prompt starts after a document separator
        if not ids:
            raise ApiError(400, "prompt is empty and this model has no end-of-text token to start from", "prompt")
        if len(ids) > max_prompt:
            raise ApiError(400, f"prompt ({len(ids)} tokens) is longer than this server's {max_prompt} tokens", "prompt")
        if loaded.context is not None and len(ids) + max_tokens > loaded.context:
            raise ApiError(400, f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceed the model's "
                                f"context of {loaded.context} tokens", "prompt")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return Job(ids, max_tokens, req.temperature, req.top_p, req.top_k, req.min_tokens, req.seed, stops,
                   deadline=time.monotonic() + options.timeout)

    def enqueue(job: Job) -> None:
        try:
            engine.submit(job)
        except queue.Full:
            wait = max(1, round(engine.busy_seconds / max(engine.steps, 1) * 64))
            raise ApiError(429, f"the server is busy ({options.max_queue} requests waiting); retry", None,
                           "rate_limit_exceeded", {"Retry-After": str(wait)}) from None

    async def respond(request: Request, req: Sampling, prompt: str | list[int], chat: bool):
        job = await job_for(req, prompt)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job.on_event = lambda text, done: loop.call_soon_threadsafe(events.put_nowait, (text, done))
        started = time.perf_counter()

        def body(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
            if chat:
                delta = {"role": "assistant"} if first else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "finish_reason": finish} if req.stream else {
                    "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                kind = "chat.completion.chunk" if req.stream else "chat.completion"
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
                kind = "text_completion"
            return {"id": rid, "object": kind, "created": created, "model": served, "choices": [choice]}

        def finish() -> str:
            metrics.finished(job, time.perf_counter() - started)
            return "stop" if job.finish_reason == "stop" else "length"

        enqueue(job)
        if not req.stream:
            try:
                while True:
                    try:
                        _, done = await asyncio.wait_for(events.get(), timeout=0.05)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            job.cancelled.set()
                            return Response(status_code=499)
                        continue
                    if done:
                        break
            finally:
                job.cancelled.set()  # a no-op once finished; stops the row if this handler was cancelled
            if job.finish_reason == "cancelled" or (job.finish_reason or "").startswith("error"):
                raise ApiError(400, f"generation failed: {job.finish_reason}", None)
            if job.finish_reason == "expired":
                raise ApiError(429, "the request waited longer than the server's timeout; retry", None,
                               "rate_limit_exceeded", {"Retry-After": "1"})
            out = body(job.text, finish())
            out["usage"] = {"prompt_tokens": len(job.ids), "completion_tokens": len(job.tokens),
                            "total_tokens": len(job.ids) + len(job.tokens)}
            return JSONResponse(out)

        async def stream():
            try:
                if chat:
                    yield f"data: {json.dumps(body(None, None, first=True))}\n\n"
                while True:
                    text, done = await events.get()
                    if text:
                        yield f"data: {json.dumps(body(text, None))}\n\n"
                    if done:
                        break
                yield f"data: {json.dumps(body(None, finish()))}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # the client went away (the task is cancelled) or the stream ended: stop the row either way
                job.cancelled.set()

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(req: CompletionRequest, request: Request):
        prompt = req.prompt if isinstance(req.prompt, str) else req.prompt[0]
        return await respond(request, req, prompt, chat=False)

    if getattr(tokenizer, "chat_template", None):
        @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
        async def chat_completions(req: ChatRequest, request: Request):
            messages = [m.model_dump() for m in req.messages]
            if sum(len(m["content"]) for m in messages) > 8 * max_prompt:
                raise ApiError(400, f"messages are longer than this server's {max_prompt} tokens", "messages")
            loop = asyncio.get_running_loop()
            try:  # rendered to ids exactly as training renders chats: one BOS, never the text tokenized again
                ids = await loop.run_in_executor(tokenizing, lambda: encode.chat_ids(tokenizer, messages, True))
            except Exception as e:  # noqa: BLE001 - the template's own checks (roles, alternation) are the client's to fix
                raise ApiError(400, f"messages: {str(e).splitlines()[0] if str(e) else type(e).__name__}", "messages") from None
            return await respond(request, req, ids, chat=True)

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def list_models():
        return {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "medsft"}]}

    @app.get("/metrics", dependencies=[Depends(authorized)])
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served, "queue": engine.depth()}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text().replace("{{MODEL}}", served)

    return app
