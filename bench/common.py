"""Shared measuring helpers for the benchmarks: the device, step timing inside a Trainer (synchronised with the
device) and this machine's matmul peak on that device."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


# The real data the benchmarks read: $MEDSFT_DATA, else the folder beside this checkout (medsft itself never looks).
DATA = Path(os.environ.get("MEDSFT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


def device() -> torch.device:
    """Where the benchmarks run: the GPU when there is one, as training does."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(where: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock reading covers it (a no-op on the CPU)."""
    if where.type == "cuda":
        torch.cuda.synchronize(where)


def peak_memory(where: torch.device) -> int | None:
    """Bytes the device's allocator held at most since the last reset (None on the CPU: see PeakRSS there)."""
    return torch.cuda.max_memory_allocated(where) if where.type == "cuda" else None


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5, where: torch.device | None = None) -> float:
    """Best-of-`repeats` FLOP/s of an n x n matmul in `dtype` on the device, now."""
    where = where or device()
    a, b = torch.randn(n, n, dtype=dtype, device=where), torch.randn(n, n, dtype=dtype, device=where)
    torch.mm(a, b)
    synchronize(where)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        synchronize(where)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


class StepTimer(TrainerCallback):
    """Per-step wall time and non-padding tokens, skipping the first `warmup` steps (allocator, first batch), and
    every logged training loss (to check that two variants train the same)."""

    def __init__(self, warmup: int = 1):
        self.warmup, self.times, self.tokens, self._t, self._tok = warmup, [], [], 0.0, 0
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize(args.device)
        self._t, self._tok = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        synchronize(args.device)
        if state.global_step > self.warmup:
            self.times.append(time.perf_counter() - self._t)
            self.tokens.append(state.num_input_tokens_seen - self._tok)


def median_rate(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
