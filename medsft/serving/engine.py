"""Batched generation for the server: one supervised worker thread decodes every request in its batch a token a step.

Requests wait in a bounded queue; the worker takes up to `max_batch` of them, prefills them together (left-padded)
and decodes them together with one KV cache, so concurrent requests share each forward pass; requests that arrive
meanwhile join the running batch between steps (their own prefill, then the caches merged, left-padded and masked)
while it has room: continuous batching. Each row has its own sampling settings and its own seeded
`torch.Generator`, so a request's draws do not depend on what it was batched with (its text neither, where its logits
do not: float32 on the CPU; bf16 and GPU kernels chosen by the batch's shape can move near-ties). Between steps the
worker drops rows that are finished, cancelled (their client went away), past their deadline or stopped by a stop
string, so a disconnected client frees the worker within one step.

The work of a step is bounded by the live rows: when rows leave, the cache and mask columns that no live row
attends to any more are dropped, so a batch that never empties on a busy server does not attend over everything
since it began. Text is decoded incrementally (generation/detokenize.py: only the new tokens, a half-written
character held back). If the worker dies (a bug outside a batch's own failure), every waiting request is ended at
once, `alive()` is false and the worker is started again after `restart_delay` seconds.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from medsft.generation.detokenize import decode_step
from medsft.generation.sampling import next_token, stop_ids
from medsft.serving.batch import Batch, merge, new_cache, trim


class Unavailable(Exception):
    """The worker is not running (it died and is being restarted): the request cannot be queued."""


@dataclass
class Job:
    """One request: its prompt ids and settings; the worker fills in the result and calls `on_event`."""

    ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_new_tokens: int = 0
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    deadline: float = float("inf")  # time.monotonic() after which generation stops ("timeout")
    on_event: Callable[[str, bool], None] = lambda text, done: None  # streamed text; done=True once at the end
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already handed to on_event
    # Why it ended: stop (a stop token or string), length (max tokens), timeout (its deadline, mid-generation),
    # cancelled (its client left), expired (its deadline passed while it waited), unavailable (the worker died),
    # "error: ..." (its batch failed).
    finish_reason: str | None = None
    decoded: tuple[int, int] = (0, 0)  # incremental decoding: (prefix, read) offsets into tokens


class Engine:
    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64, restart_delay: float = 1.0):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch = max_batch
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.steps = 0  # decoding forward passes run so far (prefills included)
        self.tokens = 0  # tokens generated so far
        self.busy_seconds = 0.0
        self.width = 0  # columns of the running batch's cache (0: no batch)
        self.restarts = 0
        self.failure: str | None = None  # why the worker last died
        self.restart_delay = restart_delay
        self.device = model.get_input_embeddings().weight.device  # the first of several under a device_map
        self.stops = stop_ids(tokenizer, model)  # every token that ends a reply (several on Llama-3, Qwen, Gemma)
        self._running: list[Job] = []  # jobs taken from the queue and not finished: ended if the worker dies
        self._alive = threading.Event()
        self._start()

    # --- the worker's life ---------------------------------------------------------------------------------------
    def _start(self) -> None:
        self._alive.set()
        threading.Thread(target=self._supervised, name="medsft-engine", daemon=True).start()

    def alive(self) -> bool:
        return self._alive.is_set()

    def _supervised(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # noqa: BLE001 - whatever killed the worker, no request may wait on a dead one
            self.failure = f"{type(e).__name__}: {e}"
        self._alive.clear()
        for job in [*self._running, *self._drain()]:
            if job.finish_reason is None:
                self._end(job, "unavailable")
        self._running = []
        time.sleep(self.restart_delay)
        self.restarts += 1
        self._start()

    def _drain(self) -> list[Job]:
        jobs = []
        while True:
            try:
                jobs.append(self.queue.get_nowait())
            except queue.Empty:
                return jobs

    @staticmethod
    def _end(job: Job, reason: str) -> None:
        job.finish_reason = reason
        try:
            job.on_event("", True)
        except Exception:  # noqa: BLE001 - a broken callback must not stop the others from being told
            pass

    def submit(self, job: Job) -> None:
        """Queue a job; queue.Full when the queue is full, Unavailable while the worker is down (the server answers
        503 with Retry-After to both)."""
        if not self.alive():
            raise Unavailable(self.failure or "the generation worker is not running")
        self.queue.put_nowait(job)

    def depth(self) -> int:
        return self.queue.qsize()

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            self._running = [first]  # taken from the queue: ended, if the worker dies, with the ones that join
            live = [] if self._expired(first) else [first]
            live += self._take(self.max_batch - len(live))
            start = time.perf_counter()
            try:
                if live:
                    self.run(live, admit=True)
            except Exception as e:  # noqa: BLE001 - a failed batch must not stop the worker: its jobs end, the next run
                reason = "error: " + ((str(e).splitlines() or [""])[0] or type(e).__name__)
                for job in self._running:
                    if job.finish_reason is None:
                        self._end(job, reason)
            self._running = []
            self.width = 0
            self.busy_seconds += time.perf_counter() - start

    def _expired(self, job: Job) -> bool:
        """A job whose client left, or whose deadline passed, while it waited: never started."""
        if job.cancelled.is_set() or time.monotonic() > job.deadline:
            self._end(job, "cancelled" if job.cancelled.is_set() else "expired")
            return True
        return False

    # --- decoding ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self, jobs: list[Job], admit: bool = False) -> None:
        """Decode `jobs` together until each is finished; rows leave the batch as they finish and, with `admit`,
        waiting requests join it between steps (continuous batching) while there is room."""
        batch = self._prefill(jobs)
        while batch is not None:
            if admit and len(batch.jobs) < self.max_batch:
                joining = self._take(self.max_batch - len(batch.jobs))
                if joining:
                    joined = self._prefill(joining)
                    batch = merge(batch, joined) if joined is not None else batch
            self.width = batch.mask.shape[1]
            batch = self._step(batch)

    def _take(self, room: int) -> list[Job]:
        """Up to `room` waiting jobs that are still wanted, without waiting for any."""
        jobs = []
        while len(jobs) < room:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            self._running.append(job)
            if not self._expired(job):
                jobs.append(job)
        return jobs

    def _forward(self, ids, mask, positions, cache) -> torch.Tensor:
        # In the model's own dtype: bf16 autocast rounds differently with the batch's shape, so a request's greedy
        # text would depend on what it was batched with.
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        self.steps += 1
        return out.logits[:, -1, :].float()

    def _prefill(self, jobs: list[Job]) -> Batch | None:
        """The prompts of `jobs` through the model (left-padded), their first tokens chosen."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.stops or [0])[0]
        width = max(len(j.ids) for j in jobs)
        ids = torch.full((len(jobs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.ids) :] = torch.tensor(job.ids)
            mask[row, width - len(job.ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache(None)
        logits = self._forward(ids, mask, positions, cache)
        batch = Batch(jobs, [self._generator(j) for j in jobs], cache, mask, positions[:, -1:], [len(j.ids) for j in jobs])
        return self._choose(batch, logits)

    def _step(self, batch: Batch) -> Batch | None:
        ids = torch.tensor(batch.pending, device=self.device).unsqueeze(-1)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.jobs), 1))], dim=-1)
        batch.positions = batch.positions + 1
        batch.lengths = [n + 1 for n in batch.lengths]
        return self._choose(batch, self._forward(ids, batch.mask, batch.positions, batch.cache))

    def _choose(self, batch: Batch, logits: torch.Tensor) -> Batch | None:
        """Each row's next token from its logits; finished rows leave the batch (None when none is left), and the
        columns only they attended to with them."""
        chosen = [self._next(job, logits[row], generator) for row, (job, generator) in enumerate(zip(batch.jobs, batch.generators))]
        keep = [row for row, job in enumerate(batch.jobs) if not self._advance(job, chosen[row])]
        self.tokens += len(batch.jobs)
        self._running = [j for j in self._running if j.finish_reason is None]
        if not keep:
            return None
        if len(keep) < len(batch.jobs):
            batch.cache.batch_select_indices(torch.tensor(keep, device=self.device))
            batch.mask, batch.positions = batch.mask[keep], batch.positions[keep]
            batch.jobs = [batch.jobs[row] for row in keep]
            batch.generators = [batch.generators[row] for row in keep]
            batch.lengths = [batch.lengths[row] for row in keep]
            trim(batch)
        batch.pending = [chosen[row] for row in keep]
        return batch

    def _generator(self, job: Job) -> torch.Generator | None:
        if job.temperature <= 0:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(job.seed if job.seed is not None else torch.seed())
        return generator

    def _next(self, job: Job, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        if len(job.tokens) < job.min_new_tokens and self.stops:
            logits[self.stops] = float("-inf")
        return next_token(logits, job.temperature, job.top_k, job.top_p, generator)

    def _advance(self, job: Job, token: int) -> bool:
        """Record one token and the text it adds; stream what is final; True when the job is finished."""
        stop = token in self.stops
        if not stop:
            job.tokens.append(token)
        before = len(job.text)
        finishing = stop or len(job.tokens) >= job.max_new_tokens or job.cancelled.is_set() or time.monotonic() > job.deadline
        new, prefix, read = decode_step(self.tokenizer, job.tokens, *job.decoded, final=finishing)
        job.text, job.decoded = job.text + new, (prefix, read)
        longest = max((len(s) for s in job.stops), default=0)
        window = job.text[max(0, before - longest + 1):]  # a stop string may span the tokens before this one
        hits = [window.find(s) for s in job.stops if s and s in window]
        if hits:
            job.text, job.finish_reason = job.text[: max(0, before - longest + 1) + min(hits)], "stop"
        elif stop:
            job.finish_reason = "stop"
        elif job.cancelled.is_set():
            job.finish_reason = "cancelled"
        elif len(job.tokens) >= job.max_new_tokens:
            job.finish_reason = "length"
        elif time.monotonic() > job.deadline:
            job.finish_reason = "timeout"
        done = job.finish_reason is not None
        # Hold back what may still turn into a stop string.
        ready = len(job.text) if done else max(job.sent, len(job.text) - max(longest, 1) + 1)
        if ready > job.sent or done:
            job.on_event(job.text[job.sent : ready], done)
            job.sent = max(job.sent, ready)
        return done
