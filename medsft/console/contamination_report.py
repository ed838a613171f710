"""The contamination check as the report and the preview show it: how many test items the training rows cover, and
each model's headline number on the clean items with the paired test between them."""

from __future__ import annotations

from rich.console import Console


def _against(record: dict) -> str:
    names = record["checked_against"]
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "") if names else "no training rows"


def line(name: str, n: int, record: dict) -> str:
    """One dataset's finding, in one line."""
    hit = len(record["ids"])
    found = (f"{hit} of {n} test items ({record['share'] * 100:.1f}%) contaminated" if hit else
             f"no test item of {n} contaminated")
    unchecked = f"; {record['unchecked']} items shorter than {record['ngram']} words not checkable" if record["unchecked"] else ""
    return (f"{name}: {found}: at least {record['threshold'] * 100:.0f}% of an item's words inside {record['ngram']}-word "
            f"sequences of the {record['training_rows']} training rows ({_against(record)}){unchecked}")


def report(console: Console, evaluation: dict) -> None:
    """After an evaluation's tables: the check, and where items were contaminated, the scores without them."""
    record = evaluation.get("contamination")
    if record is None:
        return
    console.print(("[yellow]" if record["ids"] else "[dim]") + "contamination: " + line(evaluation["name"], evaluation["n"], record))
    clean = evaluation.get("clean")
    if not clean:
        return
    if not clean["n"]:
        console.print("no clean item left to score apart: every test item is contaminated")
        return
    choice = "labels" in evaluation
    key, scale = ("accuracy", 100.0) if choice else ("perplexity", 1.0)
    cells = []
    for name, m in clean["models"].items():
        low, high = m["ci"][key]
        cells.append(f"{name} {m[key] * scale:.{1 if choice else 2}f} [{low * scale:.1f}, {high * scale:.1f}]")
    test = clean["tests"].get("tuned_vs_base")
    if test:
        cells.append(f"tuned vs base p {test['p_value']:.2g}")
    console.print(f"on the {clean['n']} clean items, {key}: " + ", ".join(cells))


def before_training(console: Console, records: dict[str, dict], sizes: dict[str, int],
                    removed: dict[str, list[str]] | None) -> None:
    """The preview's (and a run's) lines before anything trains: each test split's check, and what decontaminate
    removed (None: it was not asked for)."""
    for name, record in records.items():
        console.print(("[yellow]" if record["ids"] else "") + "contamination: " + line(name, sizes[name], record))
    if removed == {}:
        console.print("decontaminate: no training row is behind a contaminated test item; nothing removed")
    for name, ids in (removed or {}).items():
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        console.print(f"decontaminate: removed {len(ids)} training rows of {name} behind contaminated test items ({shown})")
