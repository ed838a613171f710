"""A recipe's `deidentify` applied to a dataset's rows as they are read, before the task formats them and anything is
tokenized, training and evaluation rows alike: `surrogate` and `redact` replace every identifier in every string
field and return what was done in counts, without the identifiers; `check` refuses the dataset in one line naming
how many rows hold identifiers and of which categories, printing none of them. Applied where the rows are prepared
(datasets.py), so that the data cache holds only de-identified rows, keyed by the setting."""

from __future__ import annotations

from typing import Any

from medsft.errors import UserError

MODES = ("off", "surrogate", "redact", "check")
SUMMARY = "deidentified"  # the key a de-identified dataset's summary travels under with its cached rows


def summary(tally, spec) -> dict[str, Any]:
    """What de-identification did to a dataset, in numbers (deidentified.json; the preview and the report)."""
    from medsft.deid.analyzer import detector_version

    return {"mode": spec.deidentify, "patient_column": spec.patient_column, "seed": spec.split_seed,
            "rows": tally.rows, "rows_with_identifiers": tally.rows_with, "identifiers": sum(tally.categories.values()),
            "categories": dict(tally.categories.most_common()), "detector": detector_version()}


def applied(spec, source: dict[str, list[tuple[str, Any]]]) -> tuple[dict[str, list[tuple[str, Any]]], dict | None]:
    """The dataset's raw rows ({split: [(key, row)]}, as read) as its `deidentify` leaves them, and the summary
    (None when off). Raw rows, before the task keeps its fields: every column is de-identified, and
    `patient_column` is there to scope by (the same surrogates and date shift for all of a patient's rows; else one
    scope per row)."""
    if spec.deidentify in (None, "off"):
        return source, None
    from medsft.deid.deidentifier import Deidentifier, Tally

    _check_patient_column(spec, source)
    deid, tally, out = Deidentifier(spec.deidentify, spec.split_seed), Tally(), {}
    for split, rows in source.items():
        out[split] = []
        for key, row in rows:
            if not isinstance(row, dict):  # the task refuses it, naming the row
                out[split].append((key, row))
                continue
            scope = str(row.get(spec.patient_column, key)) if spec.patient_column else str(key)
            new, found = deid.row(row, scope, skip=())
            tally.add(found)
            out[split].append((key, new))
    if spec.deidentify == "check" and tally.rows_with:
        raise UserError(f"deidentify: check found {tally.line()} of dataset {spec.name}; nothing was trained or "
                        "written. Replace them first (deidentify: surrogate or redact, or python -m medsft deid IN OUT) "
                        "or set deidentify: off if the data holds none that matter")
    return (source if spec.deidentify == "check" else out), summary(tally, spec)


def _check_patient_column(spec, source) -> None:
    """`patient_column` must name a column the rows have."""
    rows = [row for group in source.values() for _, row in group if isinstance(row, dict)]
    if spec.patient_column and not any(spec.patient_column in r for r in rows):
        columns = sorted({k for r in rows for k in r})
        raise UserError(f"patient_column {spec.patient_column!r}: no row of dataset {spec.name} has it; its rows have "
                        f"{', '.join(map(str, columns))}")
