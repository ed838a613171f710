"""Rich progress bars of work other than training steps: evaluation batches, the contamination check's training
rows, the weights' bytes, an export's tensors (training's bar, a transformers callback, is training_progress.py)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def eval_progress(console=None, transient: bool = False):
    """Yields track_for(name, unit="batches") -> a wrapper that advances a bar per item it passes on: evaluation
    batches ("eval base"), or another unit of work (the contamination check's training rows, the weights' bytes).
    `transient`: the bars are cleared when done (work that may or may not happen, as a check read back from the
    cache, leaves the output the same)."""
    columns = (
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=transient) as progress:
        def track_for(name: str, unit: str = "batches"):
            def track(items, total):
                task = progress.add_task(f"eval {name}" if unit == "batches" else name, total=total or None, unit=unit)
                for item in items:
                    yield item
                    progress.advance(task)
            return track

        yield track_for
