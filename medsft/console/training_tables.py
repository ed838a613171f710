"""Training rendered: what the data became (rows kept, shortened, split, dropped), the run's summary after training,
and the preview of rows as training sees them (trained tokens highlighted). Nothing here computes."""

from __future__ import annotations

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from medsft.data.encoding import EncodeStats


def data_summary(console: Console, stats: dict[str, EncodeStats], max_length: int | None) -> None:
    for split, s in stats.items():
        line = f"[bold]{split}[/]: {s.kept} rows"
        if s.split:
            line += f", {s.split} long texts split into {s.pieces} pieces of at most {max_length} tokens"
        if s.truncated:
            line += f", {s.truncated} with the context shortened to fit max_length {max_length}"
        if s.dropped:
            line += f", [yellow]{s.dropped} dropped[/] (the answer or the question cannot fit max_length {max_length})"
        if s.skipped:
            line += f", [yellow]{s.skipped} skipped[/] (the task could not format them)"
        if s.untrained:
            line += f", [yellow]{s.untrained} without an assistant turn[/] (nothing to train)"
        console.print(line)


def prompts_summary(console: Console, train: int, dev: int, generations: int) -> None:
    """GRPO's data: the prompts it generates after, and how many replies each."""
    console.print(f"[bold]train[/]: {train} prompts, {generations} replies each a step" + (f"; [bold]eval[/]: {dev} prompts" if dev else ""))


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
    trend = getattr(result, "rewards", None)
    if trend:
        each = f"{trend['steps_each']} step{'s' if trend['steps_each'] > 1 else ''}"
        table.add_row("reward", f"{trend['reward_first']:.3f} (first {each}) -> {trend['reward_last']:.3f} (last {each})")
        table.add_row("reply length", f"{trend['length_first']:.1f} -> {trend['length_last']:.1f} tokens")
    table.add_row("written to", result.output_dir)
    console.print(Panel(table, title="medsft: training done", expand=False))


def preview(console: Console, examples: list[tuple[list[str], list[int]]], summary: dict, steps_per_epoch: int) -> None:
    """`medsft preview`: examples with trained tokens highlighted and masked ones dimmed, then the numbers."""
    for i, (pieces, mask) in enumerate(examples):
        text = Text()
        for piece, trained in zip(pieces, mask):
            text.append(piece, style="bold green" if trained else "dim")
        console.print(Panel(text, title=f"training example {i + 1}: {sum(mask)} of {len(mask)} tokens trained", expand=True))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    length = summary["length"]
    grid.add_row("rows", f"{summary['kept']} of {summary['rows']} kept")
    grid.add_row("split", f"{summary['split']} (long texts split into {summary['pieces']} pieces of at most max_length)")
    grid.add_row("truncated", f"{summary['truncated']} (context shortened from the left so the answer fits)")
    grid.add_row("dropped", f"{summary['dropped']} (the answer or the question cannot fit max_length)")
    grid.add_row("skipped", f"{summary['skipped']} (the task could not format them)")
    grid.add_row("untrained", f"{summary['untrained']} (conversations without an assistant turn: nothing to train)")
    grid.add_row("every label masked", str(summary["all_masked"]))
    grid.add_row("tokens a row", f"min {length['min']}, median {length['median']:g}, p95 {length['p95']}, max {length['max']}")
    grid.add_row("per epoch", f"{steps_per_epoch} steps, {summary['tokens']:,} tokens, {summary['trained_tokens']:,} trained")
    console.print(Panel(grid, title="medsft preview: nothing trained, nothing written", expand=False))


def prompts_preview(console: Console, prompts: list[list[str]], lengths: list[int], steps_per_epoch: int,
                    generations: int) -> None:
    """`medsft preview` of a GRPO recipe: the prompts as the model receives them (the replies are generated after
    them and rewarded; no token of a prompt is trained), then their lengths."""
    for i, pieces in enumerate(prompts):
        console.print(Panel(Text("".join(pieces), style="dim"), title=f"prompt {i + 1}: {len(pieces)} tokens, "
                            f"{generations} replies generated after it", expand=True))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("prompts", str(len(lengths)))
    if lengths:
        grid.add_row("tokens a prompt", f"min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
                                        f"p95 {lengths[int(0.95 * (len(lengths) - 1))]}, max {lengths[-1]}")
    grid.add_row("per epoch", f"{steps_per_epoch} steps, {len(lengths) * generations} replies")
    console.print(Panel(grid, title="medsft preview (GRPO): nothing trained, nothing written", expand=False))
