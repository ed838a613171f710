"""Data for a run: each dataset's rows in its task's schema, split by role, then formatted and tokenized exactly as
training and evaluation see them."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from medsft.data import cache, deid_rows, encoding, sources, splits
from medsft.recipe.keys import DataSpec
from medsft.errors import UserError
from medsft.tasks import Task, get


@dataclass
class Dataset:
    """One dataset of the run: its spec, its task and its rows by role (train / eval / test)."""

    spec: DataSpec
    task: Task
    parts: dict[str, list[dict]] = field(default_factory=dict)
    key: str = ""  # what its rows were prepared from (cache.py)
    deidentified: dict | None = None  # what `deidentify` did to its rows, in numbers (deid_rows.summary)


def _columns(raw: dict, columns: Any, where: str) -> dict:
    if columns is None:
        return raw
    wanted = columns if isinstance(columns, dict) else {c: c for c in columns}
    missing = [c for c in wanted if c not in raw]
    if missing:
        raise UserError(f"{where} has no column {missing[0]!r} (columns); it has {', '.join(map(str, raw)) or 'none'}")
    return {new: raw[old] for old, new in wanted.items()}


def rows(spec: DataSpec, task: Task) -> dict[str, list[dict]]:
    """The dataset's rows by its own split names, de-identified as the spec says (deid_rows.py: its summary under
    deid_rows.SUMMARY), normalized by the task; a bad row is a UserError naming it."""
    source, deidentified = deid_rows.applied(spec, sources.load(spec, task))
    label = spec.dataset_name or spec.name
    out: dict[str, list[dict]] = {}
    for split, raws in source.items():
        out[split] = []
        for n, (key, raw) in enumerate(raws, 1):
            where = f"dataset {label}" + (f" split {split}" if len(source) > 1 else "") + f" row {n}"
            where += f" (id {key})" if key != sources.content_key(raw) else ""
            if not isinstance(raw, dict):
                raise UserError(f"{where} is not a JSON object")
            raw = _columns(raw, spec.columns, where)
            try:
                out[split].append(task.row(raw, key))
            except KeyError as e:
                raise UserError(f"{where} has no field {e.args[0]!r}, which the {task.name} task needs") from None
            except (ValueError, TypeError) as e:
                raise UserError(f"{where}: {e}") from None
    if not any(out.values()):
        raise UserError(f"dataset {label} has no rows")
    kept = {id(r) for r in task.prepare([r for group in out.values() for r in group])}
    out = {split: [r for r in group if id(r) in kept] for split, group in out.items()}
    seen: dict[str, int] = {}
    for r in (r for group in out.values() for r in group):  # ids name rows in split_ids.json: make them unique
        seen[r["id"]] = seen.get(r["id"], 0) + 1
        if seen[r["id"]] > 1:
            r["id"] = f"{r['id']}#{seen[r['id']]}"
    return {**out, deid_rows.SUMMARY: deidentified} if deidentified is not None else out


def _assigned(task: Task, spec: DataSpec, ids) -> dict:
    """The dataset's rows by role, with de-identification's summary (kept with them in the data cache)."""
    found = rows(spec, task)
    deidentified = found.pop(deid_rows.SUMMARY, None)
    parts = splits.assign(task, spec, found, ids)
    return {**parts, deid_rows.SUMMARY: deidentified} if deidentified is not None else parts


def load(specs: list[DataSpec], saved: dict[str, dict[str, list[str]]] | None = None) -> list[Dataset]:
    """Every dataset of the run with its rows by role; `saved` (a run's split_ids.json) fixes the roles."""
    loaded = []
    for spec in specs:
        task = get(spec)
        if saved is not None and spec.name not in saved:
            raise UserError(f"the run recorded no split for dataset {spec.name}; evaluate it with its own recipe")
        ids = saved[spec.name] if saved is not None else None
        key = cache.rows_key(spec, ids)
        parts = dict(cache.cached_rows(key, lambda: _assigned(task, spec, ids)))
        deidentified = parts.pop(deid_rows.SUMMARY, None)
        task.prepare([r for group in parts.values() for r in group])  # the task's own state from its rows (labels seen)
        loaded.append(Dataset(spec, task, parts, key, deidentified))
    return loaded


def weighted(rows: list[dict], weight: float, seed: int) -> list[dict]:
    """A mixture's share of a dataset's training rows: weight 0.5 keeps a seeded half, 2 repeats every row twice."""
    whole, part = int(weight), weight - int(weight)
    return rows * whole + random.Random(seed).sample(rows, int(round(part * len(rows))))


def examples(dataset: Dataset, role: str) -> list:
    return [dataset.task.example(r) for r in dataset.parts[role]]


def needs_chat_template(items: list) -> bool:
    return any(e is not None and (e.messages is not None or isinstance(e.prompt, list)) for e in items)


def encoded(datasets: list[Dataset], role: str, encoder: encoding.Encoder, num_proc: int | None):
    """(the datasets' `role` rows tokenized and concatenated, EncodeStats): training rows by weight, a fractional
    weight's rows drawn with the dataset's split_seed (a training seed sweep keeps the same rows)."""
    items = []
    for d in datasets:
        rows_ = weighted(d.parts[role], d.spec.weight, d.spec.split_seed) if role == "train" else d.parts[role]
        items += [d.task.example(r) for r in rows_]
    if needs_chat_template(items) and not getattr(encoder.tokenizer, "chat_template", None):
        raise UserError("conversational rows need a chat template and this tokenizer has none; set chat_template_path")
    weights = [(d.spec.weight, d.spec.split_seed) for d in datasets] if role == "train" else []

    def tokenized():
        try:
            return encoding.encode(items, encoder, num_proc)
        except ValueError as e:
            raise UserError(str(e).splitlines()[0]) from None

    return cache.cached_encoded(cache.encoded_key([d.key for d in datasets], role, weights, encoder), tokenized)


def texts(datasets: list[Dataset]) -> list[str]:
    """The training text, for a tokenizer trained from scratch."""
    out = []
    for item in (e for d in datasets for e in examples(d, "train") if e is not None):
        parts = item.messages or ([*item.prompt, *item.completion] if isinstance(item.prompt, list) else [item.prompt, item.completion])
        out.append("".join(p["content"] if isinstance(p, dict) else p for p in parts))
    return out


def summarize(stats: encoding.EncodeStats) -> dict[str, Any]:
    """What training will see: token-length statistics, row fates, tokens in all and trained."""
    import statistics

    lengths = sorted(stats.lengths)
    p95 = lengths[min(len(lengths) - 1, int(round(0.95 * (len(lengths) - 1))))] if lengths else 0
    return {
        "rows": stats.rows, "kept": stats.kept, "truncated": stats.truncated, "dropped": stats.dropped,
        "skipped": stats.skipped, "untrained": stats.untrained, "split": stats.split, "pieces": stats.pieces,
        "all_masked": stats.all_masked,
        "length": {"min": lengths[0] if lengths else 0, "median": statistics.median(lengths) if lengths else 0,
                   "p95": p95, "max": lengths[-1] if lengths else 0},
        "tokens": sum(lengths), "trained_tokens": stats.trained_tokens,
    }
