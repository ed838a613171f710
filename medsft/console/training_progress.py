"""The training progress bar: step, the trainer's figure (loss, reward), trained tokens/s, elapsed, time left; the dev
split's metrics printed under it. A transformers callback (progress.py's bars import no training library)."""

from __future__ import annotations

import time
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

EVAL_SHOWN = ("loss", "accuracy", "macro_f1", "perplexity")
SHOWN_ENDS = ("_accuracy", "_macro_f1", "_perplexity")


class RichProgress(TrainerCallback):
    """`shown(logs)`: the bar's figure after a log (the trainer's: loss, or GRPO's reward), None to leave it."""

    def __init__(self, console=None, shown: Callable[[dict], str | None] = lambda logs: None):
        self.console, self.shown = console, shown
        self.progress: Progress | None = None
        self.task = None
        self.start = 0.0
        self.tokens0 = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold blue]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, loss="loss -", tps="-")
        self.start, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.start
        tokens = state.num_input_tokens_seen - self.tokens0
        self.progress.update(self.task, completed=state.global_step, tps=f"{tokens / elapsed:,.0f}" if tokens else "-")

    def on_log(self, args, state, control, logs=None, **kwargs):
        figure = self.shown(logs) if self.progress is not None and logs else None
        if figure is not None:
            self.progress.update(self.task, loss=figure)
        if self.progress is not None and logs and "eval_loss" in logs:  # the dev split, with the task's own metrics
            shown = {k[5:]: v for k, v in logs.items() if k.startswith("eval_") and k[5:] in EVAL_SHOWN or k.endswith(SHOWN_ENDS)}
            self.progress.console.print(f"[bold]dev[/] step {state.global_step}: " +
                                        ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in shown.items()))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
