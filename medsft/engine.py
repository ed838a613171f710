"""Batched generation for the server: one worker thread decodes every request in its batch a token a step.

Requests wait in a bounded queue; the worker takes up to `max_batch` of them, prefills them together (left-padded)
and decodes them together with one KV cache, so concurrent requests share each forward pass; requests that arrive
meanwhile join the running batch between steps (their own prefill, then the caches merged, left-padded and masked)
while it has room: continuous batching. Each row has its own
sampling settings and its own seeded `torch.Generator`, so a request's sampled text does not depend on what it was
batched with. Between steps the worker drops rows that are finished, cancelled (their client went away), past their
deadline or stopped by a stop string, so a disconnected client frees the worker within one step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from medsft.generate import stop_ids

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
    deadline: float = float("inf")  # time.monotonic() after which generation stops ("length")
    on_event: Callable[[str, bool], None] = lambda text, done: None  # streamed text; done=True once at the end
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of `text` already handed to on_event
    finish_reason: str | None = None  # stop (EOS or a stop string), length, cancelled, expired (never started), error: ...


@dataclass
class _Batch:
    """Rows decoding together: their jobs and generators, one KV cache, the attention mask, each row's last position
    and the token each row feeds next."""

    jobs: list[Job]
    generators: list
    cache: object
    mask: torch.Tensor
    positions: torch.Tensor
    pending: list[int] = field(default_factory=list)


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """Two batches as one: caches and masks left-padded to the same length (masked), rows stacked."""
    from transformers import DynamicCache

    length = max(a.mask.shape[1], b.mask.shape[1])

    def left(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = length - t.shape[dim]
        if not missing:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    layers = [(torch.cat([left(x.keys, 2), left(y.keys, 2)]), torch.cat([left(x.values, 2), left(y.values, 2)]))
              for x, y in zip(a.cache.layers, b.cache.layers)]
    return _Batch(a.jobs + b.jobs, a.generators + b.generators, DynamicCache(layers),
                  torch.cat([left(a.mask, 1), left(b.mask, 1)]), torch.cat([a.positions, b.positions]), a.pending + b.pending)


class Engine:
    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch = max_batch
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.steps = 0  # decoding forward passes run so far (prefills included)
        self.tokens = 0  # tokens generated so far
        self.busy_seconds = 0.0
        self.device = next(model.parameters()).device
        self.stops = stop_ids(tokenizer, model)  # every token that ends a reply (several on Llama-3, Qwen, Gemma)
        threading.Thread(target=self._loop, name="medsft-engine", daemon=True).start()

    def submit(self, job: Job) -> None:
        """Queue a job; queue.Full when the queue is full (the server answers 429)."""
        self.queue.put_nowait(job)

    def depth(self) -> int:
        return self.queue.qsize()

    def _loop(self) -> None:
        while True:
            jobs = [self.queue.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            live = [j for j in jobs if not self._expired(j)]
            start = time.perf_counter()
            try:
                if live:
                    self.run(live, admit=True)
            except Exception as e:  # noqa: BLE001 - a failed batch must not stop the worker: its jobs end, the next run
                for job in live:
                    if job.finish_reason is None:
                        job.finish_reason = "error: " + (str(e).splitlines() or [type(e).__name__])[0]
                        job.on_event("", True)
            self.busy_seconds += time.perf_counter() - start

    def _expired(self, job: Job) -> bool:
        """A job whose client left, or whose deadline passed, while it waited: never started."""
        if job.cancelled.is_set() or time.monotonic() > job.deadline:
            job.finish_reason = "cancelled" if job.cancelled.is_set() else "expired"
            job.on_event("", True)
            return True
        return False

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
                    batch = _merge(batch, joined) if joined is not None else batch
            batch = self._step(batch)

    def _take(self, room: int) -> list[Job]:
        jobs = []
        while len(jobs) < room:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
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

    def _prefill(self, jobs: list[Job]) -> _Batch | None:
        """The prompts of `jobs` through the model (left-padded), their first tokens chosen."""
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.stops or [0])[0]
        width = max(len(j.ids) for j in jobs)
        ids = torch.full((len(jobs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.ids) :] = torch.tensor(job.ids)
            mask[row, width - len(job.ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        return self._choose(_Batch(jobs, [self._generator(j) for j in jobs], cache, mask, positions[:, -1:]), logits)

    def _step(self, batch: _Batch) -> _Batch | None:
        ids = torch.tensor(batch.pending, device=self.device).unsqueeze(-1)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.jobs), 1))], dim=-1)
        batch.positions = batch.positions + 1
        return self._choose(batch, self._forward(ids, batch.mask, batch.positions, batch.cache))

    def _choose(self, batch: _Batch, logits: torch.Tensor) -> _Batch | None:
        """Each row's next token from its logits; finished rows leave the batch (None when none is left)."""
        chosen = [self._next(job, logits[row], generator) for row, (job, generator) in enumerate(zip(batch.jobs, batch.generators))]
        keep = [row for row, job in enumerate(batch.jobs) if not self._advance(job, chosen[row])]
        self.tokens += len(batch.jobs)
        if not keep:
            return None
        if len(keep) < len(batch.jobs):
            batch.cache.batch_select_indices(torch.tensor(keep, device=self.device))
            batch.mask, batch.positions = batch.mask[keep], batch.positions[keep]
            batch.jobs = [batch.jobs[row] for row in keep]
            batch.generators = [batch.generators[row] for row in keep]
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
        if generator is None:
            return int(logits.argmax())
        logits = logits / job.temperature
        if job.top_k > 0:
            kth = torch.topk(logits, min(job.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if job.top_p < 1.0:
            order = logits.argsort(descending=True)
            cumulative = logits[order].softmax(-1).cumsum(-1)
            drop = cumulative - logits[order].softmax(-1) > job.top_p  # keep the smallest prefix reaching top_p
            logits[order[drop]] = float("-inf")
        return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))

    def _advance(self, job: Job, token: int) -> bool:
        """Record one token; stream what is final; True when the job is finished."""
        eos = token in self.stops
        if not eos:
            job.tokens.append(token)
        job.text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        hits = [job.text.find(s) for s in job.stops if s and s in job.text]
        if hits:
            job.text, job.finish_reason = job.text[: min(hits)], "stop"
        elif eos:
            job.finish_reason = "stop"
        elif job.cancelled.is_set():
            job.finish_reason = "cancelled"
        elif len(job.tokens) >= job.max_new_tokens or time.monotonic() > job.deadline:
            job.finish_reason = "length"
        done = job.finish_reason is not None
        # Hold back what may still turn into a stop string, and a half-decoded character.
        ready = len(job.text) if done else max(job.sent, len(job.text) - max((len(s) for s in job.stops), default=1) + 1)
        if not done and job.text.endswith("\ufffd"):
            ready = min(ready, len(job.text) - 1)
        if ready > job.sent or done:
            job.on_event(job.text[job.sent : ready], done)
            job.sent = max(job.sent, ready)
        return done
