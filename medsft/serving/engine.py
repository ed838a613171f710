"""Batched generation for the server: one supervised worker thread decodes every request in its batch a token a step.

Requests wait in a bounded queue; the worker takes up to `max_batch` of them and decodes them together through the
one decoding path (generation/decoder.py: prefilled left-padded, one KV cache, each row's own seeded generator);
requests that arrive meanwhile join the running batch between steps (their own prefill, then the caches merged)
while it has room: continuous batching. Rows of different adapters share a batch where peft mixes them (LoRA);
otherwise a batch takes one adapter's requests and the others wait their turn. Between steps the worker drops rows
that are finished, cancelled (their client went away), past their deadline or stopped by a stop string, so a
disconnected client frees the worker within one step, and the cache columns only they attended to go with them.
If the worker dies (a bug outside a batch's own failure), every waiting request is ended at once, `alive()` is false
and the worker is started again after `restart_delay` seconds.
"""

from __future__ import annotations

import queue
import threading
import time

import torch

from medsft.generation.batch import Batch
from medsft.generation.decoder import Decoder, Job

__all__ = ["Engine", "Job", "Unavailable"]


class Unavailable(Exception):
    """The worker is not running (it died and is being restarted): the request cannot be queued."""


class Engine(Decoder):
    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64, restart_delay: float = 1.0,
                 mixed_adapters: bool = True):
        super().__init__(model, tokenizer)
        self.max_batch = max_batch
        self.mixed_adapters = mixed_adapters  # rows of different adapters in one batch (peft's LoRA mixed batches)
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._admit = False  # whether waiting requests join the running batch (the worker's runs)
        self._held: list[Job] = []  # taken from the queue for another adapter's batch: they go first next time
        self.busy_seconds = 0.0
        self.restarts = 0
        self.failure: str | None = None  # why the worker last died
        self.restart_delay = restart_delay
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
        jobs, self._held = self._held, []
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
        return self.queue.qsize() + len(self._held)

    def _loop(self) -> None:
        while True:
            first = self._held.pop(0) if self._held else self.queue.get()
            self._running = [first]  # taken from the queue: ended, if the worker dies, with the ones that join
            live = [] if self._expired(first) else [first]
            live += self._take(self.max_batch - len(live), first.adapter)
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
    def run(self, jobs: list[Job], admit: bool = False) -> None:
        """Decode `jobs` together until each is finished; with `admit`, waiting requests join the batch between
        steps (continuous batching) while it has room."""
        self._admit = admit
        with torch.inference_mode():  # a served model never trains
            super().run(jobs)

    def _joining(self, batch: Batch) -> list[Job]:
        if not self._admit or len(batch.jobs) >= self.max_batch:
            return []
        return self._take(self.max_batch - len(batch.jobs), batch.jobs[0].adapter)

    def _left(self, batch: Batch) -> None:
        self._running = [j for j in self._running if j.finish_reason is None]

    def _take(self, room: int, adapter: str | None = None) -> list[Job]:
        """Up to `room` waiting jobs that are still wanted, without waiting for any: those held back for another
        adapter first; without mixed batches, only jobs for `adapter`."""
        jobs, held, self._held = [], self._held, []
        while len(jobs) < room:
            if held:
                job = held.pop(0)
            else:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                self._running.append(job)
            if not self.mixed_adapters and job.adapter != adapter:
                self._held.append(job)
            elif not self._expired(job):
                jobs.append(job)
        self._held += held
        return jobs
