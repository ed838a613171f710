"""`medsft deid`'s files: any data file a recipe reads (JSONL, JSON, CSV, Parquet) or a folder of .txt notes, read as
rows, de-identified (medsft/deid/), and written back in the same format beside the destination, then renamed into
place (an interrupted or refused run leaves nothing); with OUTPUT.deid.json, what was done: counts per category and
per row (by the row's number), each replacement's place, category and text, the settings and the detector's version,
never an original."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medsft.errors import UserError
from medsft.textfiles import parse_json, read_json, read_text

KINDS = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class Table:
    """A file's rows and what writing them back in its format needs."""

    kind: str  # a suffix of KINDS, or "folder"
    rows: list[Any]  # dicts (a folder's: {"name": file name, "text": the note})
    keyed: bool = False  # a JSON object of rows keyed by id
    keys: list[str] | None = None
    schema: Any = None  # Parquet's
    columns: list[str] | None = None  # CSV's


def read(path: Path) -> Table:
    """The rows of `path`; one UserError line where it cannot be read or holds none."""
    if not path.exists():
        raise UserError(f"INPUT {path} not found; give a data file (.jsonl, .json, .csv, .parquet) or a folder of .txt notes")
    if path.is_dir():
        notes = sorted(p for p in path.iterdir() if p.suffix == ".txt" and p.is_file())
        table = Table("folder", [{"name": p.name, "text": read_text(p, "note")} for p in notes])
    elif path.suffix == ".jsonl":
        lines = read_text(path, "INPUT").splitlines()
        table = Table(".jsonl", [parse_json(line, f"INPUT {path} line {n}") for n, line in enumerate(lines, 1) if line.strip()])
    elif path.suffix == ".json":
        data = read_json(path, "INPUT")
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            table = Table(".json", list(data.values()), keyed=True, keys=list(data))
        elif isinstance(data, list):
            table = Table(".json", data)
        else:
            raise UserError(f"INPUT {path} must hold a list of rows or an object of rows keyed by id")
    elif path.suffix == ".csv":
        table = _csv(path)
    elif path.suffix == ".parquet":
        table = _parquet(path)
    else:
        raise UserError(f"INPUT {path}: unsupported file type; use one of {', '.join(KINDS)} or a folder of .txt notes")
    if not table.rows:
        raise UserError(f"INPUT {path} holds no rows" + (" (no .txt note in the folder)" if table.kind == "folder" else ""))
    return table


def _csv(path: Path) -> Table:
    text = read_text(path, "INPUT")
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
    except csv.Error as e:
        raise UserError(f"INPUT {path} cannot be read as CSV: {e}") from None
    return Table(".csv", rows, columns=list(reader.fieldnames or []))


def _parquet(path: Path) -> Table:
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except Exception as e:  # pyarrow raises many types for a malformed file
        raise UserError(f"INPUT {path} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return Table(".parquet", table.to_pylist(), schema=table.schema)


def check_fields(table: Table, fields: list[str] | None, path: Path, flag: str) -> None:
    """Every field the option `flag` names exists in some row."""
    present = {k for row in table.rows if isinstance(row, dict) for k in row}
    for name in fields or []:
        if name not in present:
            raise UserError(f"{flag} {name}: no row of {path} has it; its fields are {', '.join(map(str, sorted(present)))}")


def write(table: Table, rows: list[Any], out: Path) -> None:
    """`rows` in `table`'s format at `out`, written beside it and renamed into place."""
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        if table.kind == "folder":
            partial.mkdir()
            for row in rows:
                (partial / row["name"]).write_text(row["text"], encoding="utf-8")
        elif table.kind == ".jsonl":
            partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        elif table.kind == ".json":
            value = dict(zip(table.keys, rows)) if table.keyed else rows
            partial.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
        elif table.kind == ".csv":
            with open(partial, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=table.columns)
                writer.writeheader()
                writer.writerows(rows)
        else:
            import pyarrow
            import pyarrow.parquet

            pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows, schema=table.schema), partial)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True) if partial.is_dir() else partial.unlink(missing_ok=True)
        raise


def deidentified(table: Table, mode: str, seed: int, fields: list[str] | None, patient: str | None,
                 track: Callable = lambda rows, total: rows) -> tuple[list[Any], dict[str, Any]]:
    """(the rows de-identified, the report): one scope per row, or per patient column value."""
    from medsft.deid.analyzer import detector_version
    from medsft.deid.deidentifier import Deidentifier, Tally

    deid, tally, out, per_row = Deidentifier(mode, seed), Tally(), [], []
    for n, row in enumerate(track(table.rows, len(table.rows)), 1):
        scope = str(row.get(patient)) if patient and isinstance(row, dict) and patient in row else f"row {n}"
        skip = ("name",) if table.kind == "folder" else ()
        new, found = deid.row(row, scope, fields, skip=skip)
        tally.add(found)
        out.append(new)
        if found:
            counts: dict[str, int] = {}
            for r in found:
                counts[r.category] = counts.get(r.category, 0) + 1
            per_row.append({"row": n, **({"file": row["name"]} if table.kind == "folder" else {}), "counts": counts,
                            "spans": [{"field": r.field, "start": r.start, "end": r.end, "category": r.category,
                                       "replacement": r.replacement} for r in found]})
    report = {"settings": {"mode": mode, "seed": seed, "fields": fields, "patient_column": patient},
              "detector": detector_version(), "rows": tally.rows, "rows_with_identifiers": tally.rows_with,
              "counts": dict(tally.categories.most_common()), "per_row": per_row, "summary": tally.line()}
    return out, report


def report_path(out: Path) -> Path:
    return out.with_name(out.name + ".deid.json")
