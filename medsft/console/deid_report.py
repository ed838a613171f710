"""What de-identification did, a line a dataset, in numbers only: the mode, how many identifiers in how many rows,
per category (the preview, training and the evaluation report show it; `medsft deid` prints its own)."""

from __future__ import annotations


def line(name: str, summary: dict) -> str:
    kinds = ", ".join(f"{c} {n}" for c, n in summary["categories"].items())
    verb = {"surrogate": "replaced by surrogates", "redact": "redacted", "check": "found"}[summary["mode"]]
    return (f"de-identified: {name}: {summary['identifiers']} identifiers {verb} in {summary['rows_with_identifiers']} "
            f"of {summary['rows']} rows" + (f" ({kinds})" if kinds else ""))


def report(console, summaries: dict[str, dict] | None) -> None:
    for name, summary in (summaries or {}).items():
        console.print(line(name, summary), highlight=False)
