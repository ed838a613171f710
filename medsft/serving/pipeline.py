"""One request's way through the server: validate -> tokenize -> admit -> stream or collect -> respond.

Limits come before work: the settings are checked against the server's caps, the prompt is tokenized off the event
loop (a pool of two threads) and checked against the model's context, and the job is admitted to the engine's
bounded queue (503 with Retry-After when it is full or the worker is down). A client that goes away stops its
generation within one decoding step. How a job ended decides the answer: stop, length or timeout (its deadline,
mid-generation) are answers; a failure of the server's is a 5xx, never a 4xx.
"""

from __future__ import annotations

import asyncio
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from medsft.data import spans, templates
from medsft.generation.detokenize import token_bytes
from medsft.serving.engine import Engine, Job, Unavailable
from medsft.models.inference import Loaded
from medsft.serving.openai_api import ApiError, Sampling, server_error, unavailable
from medsft.serving.replies import DONE, Reply, event
from medsft.serving.prometheus import Metrics

POLL = 0.05  # seconds between checks that the client is still there


@dataclass
class ServeOptions:
    max_tokens_cap: int = 1024  # largest max_tokens a request may ask for
    max_batch: int = 8  # requests decoded together (1: one at a time)
    max_queue: int = 64  # requests waiting; more get 503
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int | None = None  # default: the model's context
    timeout: float = 300.0  # seconds a request may wait and generate
    api_key: str | None = None


class Pipeline:
    def __init__(self, loaded: Loaded, options: ServeOptions, engine: Engine, metrics: Metrics, models: dict[str, str | None]):
        """`models`: each name served -> the adapter it runs (None: the model as loaded); the first is the default."""
        self.loaded, self.options, self.engine, self.metrics, self.models = loaded, options, engine, metrics, models
        self.served = next(iter(models))
        self.tokenizer = loaded.tokenizer
        self.vocabulary = loaded.model.get_input_embeddings().weight.shape[0]  # the ids a prompt or bias may name
        self.raw = token_bytes(self.tokenizer)
        self.max_prompt = min(x for x in (options.max_prompt_tokens, loaded.context, 10**9) if x is not None)
        self.tokenizing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="medsft-tokenize")

    # --- validate ------------------------------------------------------------------------------------------------
    def adapter(self, req: Sampling) -> str | None:
        """The adapter the request's model runs: the default without one; a 404 naming the served ones otherwise."""
        if req.model is None or req.model == self.loaded.name:
            return self.models[self.served]
        if req.model not in self.models:
            raise ApiError(404, f"model '{req.model}' is not served here; this server serves {', '.join(map(repr, self.models))}",
                           "model", "model_not_found")
        return self.models[req.model]

    def max_tokens(self, req: Sampling) -> int:
        """The request's max_tokens, once everything checked before work is (fields, model, limits)."""
        refused = req.unsupported()
        if refused is not None:
            raise refused
        self.adapter(req)
        cap = self.options.max_tokens_cap
        asked = req.asked_max_tokens()
        max_tokens = asked if asked is not None else min(256, cap)
        if max_tokens > cap:
            raise ApiError(400, f"max_tokens {max_tokens} is above this server's cap of {cap}", "max_tokens")
        if req.min_tokens > max_tokens:
            raise ApiError(400, f"min_tokens {req.min_tokens} is above max_tokens {max_tokens}", "min_tokens")
        return max_tokens

    # --- tokenize ------------------------------------------------------------------------------------------------
    async def _off_loop(self, work):
        return await asyncio.get_running_loop().run_in_executor(self.tokenizing, work)

    async def text_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, list):  # token ids, as the client's own tokenizer made them
            if max(prompt) >= self.vocabulary:
                raise ApiError(400, f"prompt: token id {max(prompt)} is outside this model's vocabulary of {self.vocabulary}", "prompt")
            return prompt
        if len(prompt) > 8 * self.max_prompt:  # no tokenizer yields fewer than one token per 8 characters of prose
            raise ApiError(400, f"prompt is longer than this server's {self.max_prompt} tokens", "prompt")
        ids = (await self._off_loop(lambda: self.tokenizer(prompt)))["input_ids"]
        ids = ids or self.engine.stops[:1]  # an empty prompt starts after a document separator
        if not ids:
            raise ApiError(400, "prompt is empty and this model has no end-of-text token to start from", "prompt")
        return ids

    async def chat_ids(self, messages: list[dict], kwargs: dict | None = None) -> list[int]:
        if sum(len(m["content"]) for m in messages) > 8 * self.max_prompt:
            raise ApiError(400, f"messages are longer than this server's {self.max_prompt} tokens", "messages")
        try:
            extra = templates.check_kwargs(self.tokenizer, kwargs)
        except ValueError as e:
            raise ApiError(400, str(e), "chat_template_kwargs") from None
        try:  # the prompt a reply follows, rendered as training renders it (spans.generation_prompt)
            return await self._off_loop(lambda: spans.generation_prompt(self.tokenizer, messages, extra))
        except Exception as e:  # noqa: BLE001 - the template's own checks (roles, alternation) are the client's to fix
            raise ApiError(400, f"messages: {str(e).splitlines()[0] if str(e) else type(e).__name__}", "messages") from None

    def job(self, req: Sampling, ids: list[int], max_tokens: int) -> Job:
        where = "messages" if hasattr(req, "messages") else "prompt"
        if len(ids) > self.max_prompt:
            raise ApiError(400, f"prompt ({len(ids)} tokens) is longer than this server's {self.max_prompt} tokens", where)
        context = self.loaded.context
        if context is not None and len(ids) + max_tokens > context:
            raise ApiError(400, f"prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) exceed the model's "
                                f"context of {context} tokens", where)
        return Job(ids, max_tokens, req.temperature, req.top_p, req.top_k, req.min_tokens, req.seed, req.stops(),
                   deadline=time.monotonic() + self.options.timeout, presence_penalty=req.presence_penalty,
                   frequency_penalty=req.frequency_penalty, logit_bias=req.bias(self.vocabulary), adapter=self.adapter(req),
                   logprobs=req.logprobs_asked())

    # --- admit ---------------------------------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until a queue's worth of steps has run, at the worker's pace so far."""
        return round(self.engine.busy_seconds / max(self.engine.steps, 1) * self.options.max_queue)

    def admit(self, job: Job, events: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        # each event carries how many tokens' log-probabilities its text completes (counted in the worker, at once)
        job.on_event = lambda text, done: loop.call_soon_threadsafe(
            events.put_nowait, (text, done, job.scored_within(job.sent + len(text), final=done)))
        try:
            self.engine.submit(job)
        except queue.Full:
            raise unavailable(f"the server is overloaded ({self.options.max_queue} requests waiting); retry",
                              self.retry_after(), "overloaded") from None
        except Unavailable as e:
            raise unavailable(f"the generation worker is being restarted ({e}); retry", 1, "worker_unavailable") from None

    # --- stream or collect ---------------------------------------------------------------------------------------
    async def next_event(self, request: Request, job: Job, events: asyncio.Queue) -> tuple[str, bool, int] | None:
        """The job's next (text, done, tokens scored so far), or None once the client has gone (its row is then stopped)."""
        while True:
            try:
                return await asyncio.wait_for(events.get(), timeout=POLL)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancelled.set()
                    return None

    def failure(self, job: Job) -> ApiError | None:
        """What a job that ended without an answer means for the client: the server's failure, always."""
        reason = job.finish_reason or ""
        if reason == "expired":
            return unavailable("the request waited longer than the server's timeout; retry", self.retry_after(), "overloaded")
        if reason == "unavailable":
            return unavailable("the generation worker stopped; it is being restarted, retry", 1, "worker_unavailable")
        if reason.startswith("error"):
            return server_error(f"generation failed: {reason.removeprefix('error: ')}")
        return None

    async def collect(self, request: Request, job: Job, events: asyncio.Queue, reply: Reply, started: float) -> Response:
        try:
            while True:
                got = await self.next_event(request, job, events)
                if got is None:
                    return Response(status_code=499)  # the client closed the connection: nobody reads this
                if got[1]:
                    break
        finally:
            job.cancelled.set()  # a no-op once finished; stops the row if this handler was cancelled
        failed = self.failure(job)
        if failed is not None:
            raise failed
        self.metrics.finished(job, time.perf_counter() - started)
        logprobs = reply.logprobs(*job.logprobs_between(0, job.scored_within(len(job.text), final=True)))
        return JSONResponse(reply.whole(job.text, job.finish_reason, len(job.ids), len(job.tokens), logprobs))

    async def stream(self, request: Request, job: Job, events: asyncio.Queue, reply: Reply, started: float) -> Response:
        first = await self.next_event(request, job, events)  # a job that never started fails with its own status
        if first is None:
            return Response(status_code=499)
        failed = self.failure(job) if first[1] else None
        if failed is not None:
            raise failed

        async def chunks():
            got, scored = first, 0
            try:
                if reply.chat:
                    yield reply.chunk(None, first=True)
                while True:
                    text, done, n = got
                    if text or n > scored:
                        yield reply.chunk(text, logprobs=reply.logprobs(*job.logprobs_between(scored, n)))
                        scored = n
                    if done:
                        break
                    got = await events.get()
                failed = self.failure(job)
                if failed is not None:  # the error as the stream's last event, as OpenAI's API sends it
                    yield event(failed.body())
                    return
                self.metrics.finished(job, time.perf_counter() - started)
                yield reply.chunk(None, job.finish_reason)
                if reply.include_usage:
                    yield reply.usage_chunk(len(job.ids), len(job.tokens))
                yield DONE
            finally:  # the client went away (the task is cancelled) or the stream ended: stop the row either way
                job.cancelled.set()

        return StreamingResponse(chunks(), media_type="text/event-stream")

    # --- respond -------------------------------------------------------------------------------------------------
    async def respond(self, request: Request, req: Sampling, ids: list[int], max_tokens: int, chat: bool) -> Response:
        job = self.job(req, ids, max_tokens)
        events: asyncio.Queue = asyncio.Queue()
        self.admit(job, events)
        spell = lambda token: self.tokenizer.decode([token])  # noqa: E731 - a token's own text, as OpenAI shows it
        usage = req.stream_options is not None and req.stream_options.include_usage
        reply, started = Reply(chat, req.stream, req.model or self.served, spell, self.raw, usage), time.perf_counter()
        answer = self.stream if req.stream else self.collect
        return await answer(request, job, events, reply, started)
