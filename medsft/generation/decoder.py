"""Decoding, the one path every generated text takes (`generate`, the sample panels, the server): prompts prefilled
together (left-padded) and decoded a token a step with one KV cache, each row under its own settings.

Each row has its own seeded `torch.Generator`, so a row's draws do not depend on what it was batched with (its text
neither, where its logits do not: float32 on the CPU; bf16 and GPU kernels chosen by the batch's shape can move
near-ties). Rows leave the batch when they are finished, cancelled, past their deadline or stopped by a stop string,
and the cache columns no live row attends to leave with them. A row may name a LoRA adapter of the model (or
`__base__`, the adapter switched off): rows of different adapters share each forward pass (peft's mixed batches).
With `logprobs`, each generated token's log-probability under the model's own distribution (the log-softmax of its
logits, before temperature, penalties or masks) and its `logprobs` most likely alternatives are kept. Under ZeRO-3
or FSDP (the model's forward passes collective), a process whose rows have all finished keeps stepping on a
placeholder row while any other process still decodes, as transformers' `synced_gpus` does."""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from medsft.generation.batch import Batch, merge, new_cache, trim
from medsft.generation.detokenize import decode_step
from medsft.generation.sampling import next_token, penalize, stop_ids
from medsft.models import sharding


@dataclass
class Job:
    """One generation: its prompt ids and settings; decoding fills in the result and calls `on_event`."""

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
    presence_penalty: float = 0.0  # OpenAI's: subtracted from each token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted once per time a token was generated
    logit_bias: dict[int, float] = field(default_factory=dict)
    adapter: str | None = None  # a LoRA adapter of the model by name, peft's __base__, or None: the model as loaded
    logprobs: int | None = None  # keep each token's log-probability and this many alternatives (None: keep none)
    scored: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)  # per token in `tokens`
    ends: list[int] = field(default_factory=list)  # per token: the length of `text` once it was decoded

    def scored_within(self, length: int, final: bool = False) -> int:
        """How many tokens' log-probabilities go with the first `length` characters of the text: the tokens spelled
        whole within them (streaming), or at the end every token that starts within them (a stop string may cut
        the last one)."""
        if final and (not self.ends or self.ends[-1] <= length):
            return len(self.scored)
        if final:
            return bisect.bisect_left([0, *self.ends[:-1]], length)
        return bisect.bisect_right(self.ends, length)

    def logprobs_between(self, first: int, last: int) -> tuple[list[int], list, list[int]]:
        """Tokens first..last-1 with their log-probabilities and where each one's text starts in `text`."""
        return self.tokens[first:last], self.scored[first:last], [0, *self.ends][first:last]


class Decoder:
    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.steps = 0  # decoding forward passes run so far (prefills included)
        self.tokens = 0  # tokens generated so far
        self.width = 0  # columns of the running batch's cache (0: no batch)
        self.device = model.get_input_embeddings().weight.device  # the first of several under a device_map
        self.stops = stop_ids(tokenizer, model)  # every token that ends a reply (several on Llama-3, Qwen, Gemma)
        self.active = getattr(model, "active_adapter", None) if hasattr(model, "peft_config") else None
        self.synced = sharding.sharded(model)  # every process steps while any decodes

    # no_grad, not inference_mode: a model that trains afterwards (ZeRO-3 gathers its weights here) stays trainable
    @torch.no_grad()
    def run(self, jobs: list[Job]) -> None:
        """Decode `jobs` together until each is finished; rows leave the batch as they finish, and rows `_joining`
        hands over join it between steps."""
        batch = self._prefill(jobs)
        while self._going(batch):
            if batch is None:  # this process is done; another still decodes, and its forward passes are collective
                self._placeholder_step()
                continue
            joining = self._joining(batch)
            if joining:
                joined = self._prefill(joining)
                batch = merge(batch, joined) if joined is not None else batch
            self.width = batch.mask.shape[1]
            batch = self._step(batch)

    def _going(self, batch: Batch | None) -> bool:
        alive = batch is not None
        return sharding.largest(int(alive), self.device) > 0 if self.synced else alive

    def _placeholder_step(self) -> None:
        """One forward pass whose result nobody reads: the module calls a decoding step makes, on one token."""
        ids = torch.zeros((1, 1), dtype=torch.long, device=self.device)
        self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)

    def _joining(self, batch: Batch) -> list[Job]:
        return []  # the server's engine admits waiting requests here

    def _left(self, batch: Batch) -> None:
        """Called after each step, once finished rows have left (the engine forgets them)."""

    def _adapters(self, jobs: list[Job]) -> dict:
        """The forward pass's adapter keyword: none when every row runs the model as loaded."""
        names = [j.adapter or self.active for j in jobs]
        if self.active is None or all(n == self.active for n in names):
            return {}
        return {"adapter_names": names}

    def _forward(self, ids, mask, positions, cache, jobs: list[Job]) -> torch.Tensor:
        # In the model's own dtype: bf16 autocast rounds differently with the batch's shape, so a request's greedy
        # text would depend on what it was batched with.
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                         use_cache=True, logits_to_keep=1, **self._adapters(jobs))
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
        logits = self._forward(ids, mask, positions, cache, jobs)
        batch = Batch(jobs, [self._generator(j) for j in jobs], cache, mask, positions[:, -1:], [len(j.ids) for j in jobs])
        return self._choose(batch, logits)

    def _step(self, batch: Batch) -> Batch | None:
        ids = torch.tensor(batch.pending, device=self.device).unsqueeze(-1)
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.jobs), 1))], dim=-1)
        batch.positions = batch.positions + 1
        batch.lengths = [n + 1 for n in batch.lengths]
        return self._choose(batch, self._forward(ids, batch.mask, batch.positions, batch.cache, batch.jobs))

    def _choose(self, batch: Batch, logits: torch.Tensor) -> Batch | None:
        """Each row's next token from its logits; finished rows leave the batch (None when none is left), and the
        columns only they attended to with them."""
        chosen, keep = [], []
        for row, (job, generator) in enumerate(zip(batch.jobs, batch.generators)):
            scored = self._scored(job, logits[row])  # before _next masks the row's logits
            chosen.append(self._next(job, logits[row], generator))
            if not self._advance(job, chosen[-1], None if scored is None else scored(chosen[-1])):
                keep.append(row)
        self.tokens += len(batch.jobs)
        self._left(batch)
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

    @staticmethod
    def _scored(job: Job, logits: torch.Tensor):
        """With logprobs: a function from the chosen token to (its log-probability, the most likely alternatives),
        from the model's own distribution."""
        if job.logprobs is None:
            return None
        logprobs = logits.log_softmax(-1)
        top = torch.topk(logprobs, job.logprobs) if job.logprobs else None
        alternatives = [] if top is None else list(zip(top.indices.tolist(), top.values.tolist()))
        return lambda token: (float(logprobs[token]), alternatives)

    def _generator(self, job: Job) -> torch.Generator | None:
        if job.temperature <= 0:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(job.seed if job.seed is not None else torch.seed())
        return generator

    def _next(self, job: Job, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        logits = penalize(logits, job.tokens, job.presence_penalty, job.frequency_penalty, job.logit_bias)
        if len(job.tokens) < job.min_new_tokens and self.stops:
            logits[self.stops] = float("-inf")
        return next_token(logits, job.temperature, job.top_k, job.top_p, generator)

    def _advance(self, job: Job, token: int, scored=None) -> bool:
        """Record one token and the text it adds; stream what is final; True when the job is finished."""
        stop = token in self.stops
        if not stop:
            job.tokens.append(token)
        before = len(job.text)
        finishing = stop or len(job.tokens) >= job.max_new_tokens or job.cancelled.is_set() or time.monotonic() > job.deadline
        new, prefix, read = decode_step(self.tokenizer, job.tokens, *job.decoded, final=finishing)
        job.text, job.decoded = job.text + new, (prefix, read)
        if not stop and scored is not None:
            job.scored.append(scored)
            job.ends.append(len(job.text))
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
