"""The run's datasets: `dataset_mixture` entries (alignment-handbook's shape: id or path, config, split, columns,
weight, plus any per-dataset key such as task or prompt_template), or the single dataset the top-level keys name.
The top-level per-dataset keys are each entry's defaults."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from medsft.recipe.keys import DataFields, DataSpec
from medsft.recipe.coerce import coerce, type_name
from medsft.errors import UserError

ALIASES = {"id": "dataset_name", "path": "dataset_name", "config": "dataset_config", "split": "train_split"}
SPEC_FIELDS = {f.name: f for f in dataclasses.fields(DataSpec)}


def _name(spec: DataSpec) -> str:
    if spec.dataset_name in (None, "synthetic"):
        if spec.data_files is not None:
            first = spec.data_files if isinstance(spec.data_files, str) else next(iter(
                spec.data_files.values() if isinstance(spec.data_files, dict) else spec.data_files))
            return Path(first if isinstance(first, str) else first[0]).stem
        return spec.task
    path = Path(spec.dataset_name)
    return path.name if path.is_dir() else path.stem if path.suffix else spec.dataset_name.rstrip("/").split("/")[-1]


def _entry(raw: Any, i: int, top: DataSpec) -> DataSpec:
    import typing

    where = f"dataset_mixture entry {i}"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a mapping such as {{id: ..., weight: 1.0}}")
    hints = typing.get_type_hints(DataSpec)
    values = {}
    for key, value in raw.items():
        field = ALIASES.get(key, key)
        if field not in SPEC_FIELDS:
            close = difflib.get_close_matches(key, [*SPEC_FIELDS, *ALIASES], n=1, cutoff=0.6)
            raise UserError(f"unknown key '{key}' in {where}" + (f"; did you mean '{close[0]}'?" if close else ""))
        try:
            values[field] = coerce(value, hints[field])
        except TypeError:
            raise UserError(f"key '{key}' in {where} must be {type_name(hints[field])}, got {value!r}") from None
    if values.get("weight", 1.0) < 0:
        raise UserError(f"weight in {where} must be 0 or more (0: evaluation only), got {values['weight']}")
    spec = dataclasses.replace(top, **values)
    if spec.dataset_name is None and spec.data_files is None:
        raise UserError(f"{where} names no data: give it an id or a path (or data_files)")
    return spec


def specs(script, training) -> list[DataSpec]:
    """One DataSpec per dataset of the run, each named uniquely (its evaluation and its ids go by that name)."""
    top = DataSpec(**{f.name: getattr(script, f.name) for f in dataclasses.fields(DataFields)},
                   dataset_text_field=getattr(training, "dataset_text_field", "text"))  # SFTConfig's; GRPO reads no text column
    mixture = script.dataset_mixture
    if mixture is None:
        found = [top]
    else:
        if script.dataset_name is not None or script.data_files is not None:
            raise UserError("dataset_name (or data_files) and dataset_mixture are both set; keep one")
        entries = mixture.get("datasets") if isinstance(mixture, dict) else mixture
        if isinstance(mixture, dict) and set(mixture) - {"datasets"}:
            extra = sorted(set(mixture) - {"datasets"})[0]
            raise UserError(f"unknown key '{extra}' in dataset_mixture; put per-dataset keys in its entries or at the top level")
        if not isinstance(entries, list) or not entries:
            raise UserError("dataset_mixture must list its datasets: [{id: ..., weight: ...}, ...] (or {datasets: [...]})")
        found = [_entry(raw, i, top) for i, raw in enumerate(entries, 1)]
    taken: set[str] = set()
    for spec in found:
        name = spec.name or _name(spec)
        base, k = name, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        spec.name = name
        taken.add(name)
    if not any(spec.weight > 0 for spec in found):
        raise UserError("every dataset_mixture weight is 0: nothing would train")
    return found
