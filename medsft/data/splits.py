"""Which rows train, which are the dev set and which are scored. In order of precedence:

1. the ids a trained run recorded (split_ids.json in its output_dir), so `eval RUN` scores that run's test rows;
2. a split file: `split_file`, or a splits.json beside local data ({test, folds} or {train, eval, test} of ids);
3. the dataset's own splits (train_split / eval_split / test_split);
4. the task's official split (PubMedQA's, shipped in the package) where the data has no test split;
5. only then a seeded split, with its own `split_seed`: never the training seed, so a seed sweep keeps its test set.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.textfiles import read_json
from medsft.tasks import Task, stratified_sample

ROLES = ("train", "eval", "test")
DEV_NAMES = ("validation", "valid", "val", "dev", "eval")


def _size(value: float, n: int) -> int:
    return int(value) if value >= 1 else int(round(value * n))


def seeded(rows: list[dict], eval_size: float, test_size: float, seed: int) -> dict[str, list[dict]]:
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    n_test, n_eval = _size(test_size, len(rows)), _size(eval_size, len(rows))
    if n_test + n_eval >= len(rows) and rows:
        raise UserError(f"eval_split_size and test_split_size leave no training rows of {len(rows)}; lower them")
    return {"test": shuffled[:n_test], "eval": shuffled[n_test : n_test + n_eval], "train": shuffled[n_test + n_eval :]}


def by_ids(rows: list[dict], ids: dict[str, Any], fold: int, where: str, strict: bool) -> dict[str, list[dict]]:
    """Roles from a split file: {test, folds} (fold `fold` is the dev set, the other folds train) or {train, eval,
    test}. Rows the file does not name train (they cannot be test items). strict: every test id must be present."""
    if "folds" in ids:
        folds = ids["folds"]
        if not 0 <= fold < len(folds):
            raise UserError(f"fold {fold} is out of range: {where} has {len(folds)} folds (0-{len(folds) - 1})")
        named = {"test": ids.get("test", []), "eval": folds[fold]}
    else:
        named = {role: ids.get(role, []) for role in ("eval", "test")}
    present = {r["id"] for r in rows}
    missing = [i for i in named["test"] if str(i) not in present]
    if strict and missing:
        raise UserError(f"{where}: {len(missing)} test ids (e.g. {missing[0]}) are not in the dataset")
    role = {str(i): name for name, group in named.items() for i in group}
    parts: dict[str, list[dict]] = {name: [] for name in ROLES}
    for r in rows:
        parts[role.get(r["id"], "train")].append(r)
    return parts


def split_file(spec) -> tuple[Path | None, dict | None]:
    from medsft.data import sources

    path = Path(spec.split_file).expanduser() if spec.split_file else sources.beside(spec)
    if path is None:
        return None, None
    if not path.is_file():
        raise UserError(f"split_file not found: {path}")
    ids = read_json(path, "split file")
    if not isinstance(ids, dict) or not ({"folds", "test"} & set(ids)):
        raise UserError(f"split file {path} must be a JSON object with test (and folds, or train/eval) id lists")
    return path, ids


def assign(task: Task, spec, source: dict[str, list[dict]], saved: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """{"train", "eval", "test"}: rows by role (see the module docstring), capped by max_*_samples."""
    every = [r for rows in source.values() for r in rows]
    if saved is not None:
        by_id = {r["id"]: r for r in every}
        lost = [i for role in ROLES for i in saved.get(role, []) if i not in by_id]
        if lost:
            raise UserError(f"dataset {spec.name}: {len(lost)} ids recorded by the run (e.g. {lost[0]}) are not in the data any more")
        return {role: [by_id[i] for i in saved.get(role, [])] for role in ROLES}
    path, ids = split_file(spec)
    if ids is not None:
        parts = by_ids(every, ids, spec.fold, f"split file {path}", strict=bool(spec.split_file))
    else:
        parts = own_splits(task, spec, source)
    return cap(task, spec, parts)


def own_splits(task: Task, spec, source: dict[str, list[dict]]) -> dict[str, list[dict]]:
    for key, default in (("train_split", "train"), ("eval_split", None), ("test_split", "test")):
        name = getattr(spec, key)
        if name is not None and name not in source and name != default:  # a default may be absent: carved below
            raise UserError(f"{key} {name!r} is not a split of dataset {spec.name}; it has {', '.join(source)}")
    dev = spec.eval_split or next((n for n in DEV_NAMES if n in source), None)
    parts = {"train": list(source.get(spec.train_split, [])) if spec.train_split else [],
             "eval": list(source.get(dev, [])) if dev else [], "test": list(source.get(spec.test_split, [])) if spec.test_split else []}
    eval_size = spec.eval_split_size if spec.eval_split_size is not None else task.split_sizes[0]
    test_size = spec.test_split_size if spec.test_split_size is not None else task.split_sizes[1]
    if not parts["test"] and spec.test_split_size != 0:
        official = task.official_split()
        if official is not None:
            test_ids = set(official["test"])
            if any(r["id"] in test_ids for r in parts["train"]):
                return by_ids(parts["train"] + parts["eval"], official, spec.fold, f"the official {task.name} split", strict=False)
        carved = seeded(parts["train"], 0 if parts["eval"] else eval_size, test_size, spec.split_seed)
        return {"train": carved["train"], "eval": parts["eval"] or carved["eval"], "test": carved["test"]}
    if not parts["eval"] and parts["train"]:
        carved = seeded(parts["train"], eval_size, 0, spec.split_seed)
        parts["train"], parts["eval"] = carved["train"], carved["eval"]
    return parts


def cap(task: Task, spec, parts: dict[str, list[dict]]) -> dict[str, list[dict]]:
    if spec.max_train_samples is not None:
        parts["train"] = random.Random(spec.split_seed).sample(parts["train"], min(spec.max_train_samples, len(parts["train"])))
    gold = task.gold if task.choices else (lambda r: None)
    for role, limit in (("eval", spec.max_eval_samples), ("test", spec.max_test_samples)):
        if limit is not None:
            parts[role] = stratified_sample(parts[role], limit, spec.split_seed, gold)
    return parts
