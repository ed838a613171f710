"""An OpenAI-compatible HTTP server for a run or a model: /v1/completions, /v1/chat/completions, /v1/models,
/health and a self-contained web page at /.

Generation runs on one worker thread, off the event loop: /health answers during a long generation, and
concurrent requests queue for the model instead of interleaving their tokens. Bad requests get a 4xx whose JSON
names the field (OpenAI's error shape); nothing a client sends produces a 500.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from transformers import GenerationConfig, TextStreamer

from medsft import encode
from medsft.inference import Loaded

PAGE = Path(__file__).with_name("page.html")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients send fields we do not use (user, logit_bias, ...)

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)  # extras beside OpenAI's fields (as vLLM names them): 0 keeps every token,
    min_tokens: int = Field(default=0, ge=0)  # and no EOS before min_tokens
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


class CompletionRequest(Sampling):
    prompt: str | list[str]


class Message(BaseModel):
    role: str
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class _QueueStreamer(TextStreamer):
    """Hands decoded text from the generation thread to the event loop."""

    def __init__(self, tokenizer, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.loop, self.queue = loop, queue

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, text)


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    hits = [text.index(s) for s in stops if s and s in text]
    return (text[: min(hits)], True) if hits else (text, False)


def create_app(loaded: Loaded, max_tokens_cap: int = 1024) -> FastAPI:
    app = FastAPI(title="medsft", docs_url=None, redoc_url=None)
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medsft-generate")
    model, tokenizer, served = loaded.model, loaded.tokenizer, Path(loaded.name).name or loaded.name
    has_chat = bool(getattr(tokenizer, "chat_template", None))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse({"error": {"message": e.message, "type": e.code, "param": e.param, "code": None}}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return await api_error(request, ApiError(400, "request body is not valid JSON", "body"))
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        param = ".".join(loc) or "body"
        message = "missing" if first.get("type") == "missing" else first.get("msg", "invalid value")
        return await api_error(request, ApiError(400, f"{param}: {message}", param))

    def prepare(req: Sampling, prompt: str | list[int]) -> tuple[list[int], GenerationConfig, list[str]]:
        if req.model not in (None, served, loaded.name):
            raise ApiError(404, f"model '{req.model}' is not served here; this server serves '{served}'", "model", "model_not_found")
        max_tokens = req.max_tokens if req.max_tokens is not None else min(256, max_tokens_cap)
        if max_tokens > max_tokens_cap:
            raise ApiError(400, f"max_tokens {max_tokens} is above this server's cap of {max_tokens_cap}", "max_tokens")
        if req.min_tokens > max_tokens:
            raise ApiError(400, f"min_tokens {req.min_tokens} is above max_tokens {max_tokens}", "min_tokens")
        ids = (tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else prompt) or [tokenizer.eos_token_id]
        if loaded.context is not None and len(ids) + max_tokens > loaded.context:
            raise ApiError(400, f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceed the model's "
                                f"context of {loaded.context} tokens", "prompt")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 4:
            raise ApiError(400, "stop takes at most 4 sequences", "stop")
        sampling = req.temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_tokens, min_new_tokens=req.min_tokens or None, do_sample=sampling,
            temperature=req.temperature if sampling else None, top_p=req.top_p if sampling else None,
            top_k=req.top_k if sampling and req.top_k > 0 else None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        return ids, config, stops

    def run(ids: list[int], config: GenerationConfig, seed: int | None, streamer=None) -> tuple[str, int, bool]:
        """(text, new tokens, stopped at EOS) on the worker thread."""
        if seed is not None:
            torch.manual_seed(seed)
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config, streamer=streamer)
        new = out[0, len(ids):].tolist()
        eos = bool(new) and new[-1] == tokenizer.eos_token_id
        return tokenizer.decode(new, skip_special_tokens=True), len(new), eos

    async def respond(req: Sampling, prompt: str | list[int], chat: bool):
        ids, config, stops = prepare(req, prompt)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        loop = asyncio.get_running_loop()

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

        if not req.stream:
            text, n_new, eos = await loop.run_in_executor(worker, run, ids, config, req.seed)
            text, stopped = _cut_at_stop(text, stops)
            out = body(text, "stop" if stopped or eos else "length")
            out["usage"] = {"prompt_tokens": len(ids), "completion_tokens": n_new, "total_tokens": len(ids) + n_new}
            return JSONResponse(out)

        queue: asyncio.Queue = asyncio.Queue()
        streamer = _QueueStreamer(tokenizer, loop, queue)
        job = loop.run_in_executor(worker, run, ids, config, req.seed, streamer)
        hold = max((len(s) for s in stops), default=1) - 1  # text that might still become a stop sequence

        async def events():
            if chat:
                yield f"data: {json.dumps(body(None, None, first=True))}\n\n"
            pending, stopped = "", False
            getter = None
            while not stopped:
                getter = getter or asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    pending += getter.result()
                    getter = None
                elif queue.empty():
                    break
                text, stopped = _cut_at_stop(pending, stops)
                ready = text if stopped else text[: max(0, len(text) - hold)]
                if ready:
                    yield f"data: {json.dumps(body(ready, None))}\n\n"
                    pending = pending[len(ready):]
            if not stopped and pending:
                text, stopped = _cut_at_stop(pending, stops)
                if text:
                    yield f"data: {json.dumps(body(text, None))}\n\n"
            if getter is not None:
                getter.cancel()
            _, _, eos = await job  # the worker finishes its generation even when a stop sequence ended ours
            yield f"data: {json.dumps(body(None, 'stop' if stopped or eos else 'length'))}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise ApiError(400, "prompt must be one string (or a list of one)", "prompt")
        return await respond(req, prompts[0], chat=False)

    if has_chat:
        @app.post("/v1/chat/completions")
        async def chat_completions(req: ChatRequest):
            messages = [m.model_dump() for m in req.messages]
            try:  # rendered to ids exactly as training renders chats: one BOS, never the text tokenized again
                ids = encode.chat_ids(tokenizer, messages, add_generation_prompt=True)
            except Exception as e:  # the template's own checks (roles, alternation) are the client's to fix
                raise ApiError(400, f"messages: {e}", "messages") from None
            return await respond(req, ids, chat=True)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "medsft"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text().replace("{{MODEL}}", served)

    return app
