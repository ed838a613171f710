"""`medsft compare` rendered: per evaluation, each folder's numbers with their intervals, then each pair's difference
with its interval, its p-value and the Holm-adjusted one. Results in, rich output out."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from medsft.console.evaluation_tables import with_ci

NAMES = {"accuracy": "accuracy %", "macro_f1": "macro-F1 %", "perplexity": "perplexity"}


def _value(metric: str, value: float, ci: list[float] | None) -> str:
    return with_ci(value, ci, 1.0, 2) if metric == "perplexity" else with_ci(value, ci)


def _difference(pair: dict) -> str:
    low, high = pair["ci"]
    if pair["metric"] == "perplexity":
        return f"x{pair['ratio']:.3f} [{low:.3f}, {high:.3f}]"
    return f"{pair['delta'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


def report(console: Console, comparison: dict) -> None:
    for evaluation in comparison["evaluations"]:
        title = (f"{evaluation['name']}: {evaluation['task']} on {evaluation['n']} test items"
                 + (f", {evaluation['scoring']}" if evaluation.get("scoring") else ""))
        metrics = list(next(iter(evaluation["models"].values())))[1:]  # after "folder"
        table = Table(title=title, min_width=len(title))
        table.add_column("run")
        for metric in metrics:
            table.add_column(NAMES[metric] + " (95% interval)", justify="right")
        for label, numbers in evaluation["models"].items():
            table.add_row(label, *(_value(m, numbers[m]["value"], numbers[m]["ci"]) for m in metrics))
        console.print(table)
        tests = Table(title="each pair, on the same items: second against first")
        for column in ("first", "second", "metric", "difference (95% interval)", "p", "p (Holm)", "test"):
            tests.add_column(column, justify="right" if column in ("p", "p (Holm)") else "left")
        for pair in evaluation["pairs"]:
            star = "*" if pair["p_holm"] < 0.05 else ""
            tests.add_row(pair["first"], pair["second"], NAMES[pair["metric"]], _difference(pair), f"{pair['p']:.2g}",
                          f"{pair['p_holm']:.2g}{star}", pair["test"])
        console.print(tests)
        console.print(f"[dim]* significant at 0.05 after Holm's adjustment for the {len(evaluation['models'])} runs' "
                      "pairs, metric by metric; differences are second minus first (perplexity: second / first)[/]")
