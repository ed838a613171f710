"""Rendering: results in, rich console output out. Nothing here computes a metric."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from medsft.data import EncodeStats


def data_summary(console: Console, stats: dict[str, EncodeStats], max_length: int | None) -> None:
    for split, s in stats.items():
        line = f"[bold]{split}[/]: {s.kept} rows"
        if s.truncated:
            line += f", {s.truncated} with the context shortened to fit max_length {max_length}"
        if s.dropped:
            line += f", [yellow]{s.dropped} dropped[/] (the answer alone exceeds max_length {max_length})"
        if s.skipped:
            line += f", [yellow]{s.skipped} skipped[/] (the task could not format them)"
        console.print(line)


def train_summary(console: Console, result, model_name: str) -> None:
    def fmt(x):
        return "-" if x is None else f"{x:.4f}"

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", model_name)
    table.add_row("steps", str(result.steps))
    minutes, seconds = divmod(result.seconds, 60)
    rate = f" ({result.tokens / result.seconds:,.0f} tokens/s)" if result.tokens and result.seconds else ""
    table.add_row("time", f"{int(minutes)} min {seconds:.0f} s{rate}")
    table.add_row("train loss", fmt(result.train_loss))
    table.add_row("eval loss", fmt(result.eval_loss))
    table.add_row("written to", result.output_dir)
    console.print(Panel(table, title="medsft: training done", expand=False))
