"""`medsft audit`'s findings as a table: extraction (trained and held-out), the membership AUCs with their intervals,
each canary's exposure by repeat count, and the verdict line."""

from __future__ import annotations

from rich.table import Table


def _pct(value, ci=None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" + (f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else "")


def report(console, found: dict, path) -> None:
    e, rows = found["extraction"], found["rows"]
    table = Table(title=f"memorization audit: {rows['trained']} trained rows, {rows['heldout']} held-out "
                        f"(prefix {found['prefix']}, suffix {found['suffix']} tokens)")
    for column in ("measure", "trained", "held-out / chance"):
        table.add_column(column)
    table.add_row("extractable", _pct(e["share"], e["ci"]) + f" of {e['compared']}",
                  _pct(e["heldout_share"], e["heldout_ci"]) + f" of {e['heldout_compared']}")
    for kind, v in found["membership"].items():
        shown = "-" if v["value"] is None else f"{v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]"
        table.add_row(f"membership AUC ({kind.removesuffix('_auc')})", shown, "0.5")
    for c in found["canaries"]:
        table.add_row(f"canary x{c['repeats']} exposure", f"{c['exposure']:.1f} bits ({c['method']}, {c['candidates']} "
                      f"candidates)", f"max {c['max_exposure']:.1f}")
    console.print(table)
    console.print(f"{found['verdict']}; details in {path}", highlight=False)
