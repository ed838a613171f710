"""Shared measuring helpers for the benchmarks: step timing inside a Trainer and this machine's matmul peak."""

from __future__ import annotations

import statistics
import time

import torch
from transformers import TrainerCallback


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` FLOP/s of an n x n matmul in `dtype` on this machine, now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


class StepTimer(TrainerCallback):
    """Per-step wall time and non-padding tokens, skipping the first `warmup` steps (allocator, first batch)."""

    def __init__(self, warmup: int = 1):
        self.warmup, self.times, self.tokens, self._t, self._tok = warmup, [], [], 0.0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t, self._tok = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)
            self.tokens.append(state.num_input_tokens_seen - self._tok)


def median_rate(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
