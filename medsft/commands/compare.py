"""`python -m medsft compare A B [C ...] [--json] [--seed S]`: runs or evaluations scored on the same items the same
way, side by side, every pair tested."""

from __future__ import annotations

from pathlib import Path

from medsft.commands.common import pop_int
from medsft.errors import UserError


def main(argv: list[str]) -> int:
    """Read each folder's eval_results.json and predictions.jsonl, refuse what is not comparable, print the table
    (or, with --json, the comparison as JSON on stdout)."""
    import json

    from medsft.evaluation import compare_runs

    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    seed, argv = pop_int(argv, "--seed", "the bootstrap's seed, e.g. --seed 0")
    unknown = [a for a in argv if a.startswith("-")]
    if unknown:
        raise UserError(f"compare takes folders, --json and --seed; {unknown[0]} is not one of them")
    folders = [Path(a) for a in argv]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        raise UserError(f"{missing[0]} is not a folder; give run or evaluation folders, each holding its evaluation")
    found = compare_runs.compare(folders, seed or 0)
    if as_json:
        print(json.dumps(found, indent=2))
        return 0
    from rich.console import Console

    from medsft.console import compare_tables

    compare_tables.report(Console(), found)
    return 0
