"""Training rendered: what the data became (the trainer's lines), the run's summary after training, and the preview
of the data as training sees it (trained tokens highlighted). Nothing here computes."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from medsft.training.trainers import DataLines, Preview


def data_summary(console: Console, lines: DataLines) -> None:
    """What the data became, a line a split (the trainer's phrases; its warnings in yellow)."""
    for split, phrases in lines:
        console.print(f"[bold]{split}[/]: " + ", ".join(f"[yellow]{p}[/]" if warn else p for p, warn in phrases))


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
    for label, text in result.summary:  # the trainer's own (GRPO: its reward and reply length)
        table.add_row(label, text)
    table.add_row("written to", result.output_dir)
    console.print(Panel(table, title="medsft: training done", expand=False))


def preview(console: Console, shown: Preview) -> None:
    """`medsft preview`: the trainer's panels, trained tokens highlighted and the others dimmed (a prompt's all
    dimmed: nothing of it is trained), then its numbers."""
    for title, pieces, mask in shown.panels:
        text = Text()
        for piece, trained in zip(pieces, mask or [0] * len(pieces)):
            text.append(piece, style="bold green" if trained else "dim")
        console.print(Panel(text, title=title, expand=True))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in shown.rows:
        grid.add_row(label, value)
    console.print(Panel(grid, title=shown.title, expand=False))
