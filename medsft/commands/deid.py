"""`python -m medsft deid INPUT OUTPUT [--mode surrogate|redact] [--seed S] [--fields a,b] [--patient_column C]
[--force]`: a data file (or a folder of .txt notes) with every identifier replaced, written in its own format, and
OUTPUT.deid.json saying what was replaced, never the originals."""

from __future__ import annotations

from pathlib import Path

from medsft.commands.common import pop_int, pop_option
from medsft.errors import UserError

USAGE = ("usage: python -m medsft deid INPUT OUTPUT [--mode surrogate|redact] [--seed S] [--fields a,b] "
         "[--patient_column C] [--force]")
MODES = ("surrogate", "redact")


def options(argv: list[str]) -> dict:
    """The command line's options, parsed (no file looked at)."""
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    mode, argv = pop_option(argv, "--mode")
    seed, argv = pop_int(argv, "--seed", "the surrogates' seed, e.g. --seed 0")
    fields, argv = pop_option(argv, "--fields")
    patient, argv = pop_option(argv, "--patient_column")
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise UserError(USAGE)
    if (mode or "surrogate") not in MODES:
        raise UserError(f"--mode {mode} is not a mode of deid; choose {', '.join(MODES)}")
    names = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    return {"source": Path(argv[0]), "out": Path(argv[1]), "mode": mode or "surrogate", "seed": seed or 0,
            "fields": names, "patient": patient, "force": force}


def _arguments(argv: list[str]):
    given = options(argv)
    source, out, force = given["source"], given["out"], given["force"]
    if not source.exists():
        raise UserError(f"INPUT {source} not found; give a data file (.jsonl, .json, .csv, .parquet) or a folder of .txt notes")
    if source.is_dir() and out.exists() and not out.is_dir() or not source.is_dir() and out.suffix != source.suffix:
        raise UserError(f"OUTPUT {out} must be in INPUT's format: " + ("a folder" if source.is_dir() else f"a {source.suffix} file"))
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    if out.resolve() == source.resolve():
        raise UserError("OUTPUT must not be INPUT: the original is kept as it is")
    return source, out, given["mode"], given["seed"], given["fields"], given["patient"]


def main(argv: list[str]) -> int:
    """Read INPUT, de-identify every string field (or --fields), write OUTPUT and its report, say what was done."""
    import json

    from rich.console import Console

    from medsft.console.progress import eval_progress
    from medsft.data import deid_files

    source, out, mode, seed, fields, patient = _arguments(argv)
    table = deid_files.read(source)
    deid_files.check_fields(table, fields, source, "--fields")
    deid_files.check_fields(table, [patient] if patient else None, source, "--patient_column")
    console = Console(soft_wrap=True)
    with eval_progress(console, transient=True) as track_for:
        rows, report = deid_files.deidentified(table, mode, seed, fields, patient, track_for("de-identifying", "rows"))
    deid_files.write(table, rows, out)
    path = deid_files.report_path(out)
    path.write_text(json.dumps(report, indent=1))
    console.print(f"{mode}: {report['summary']}; wrote {out} and {path}", highlight=False)
    return 0
