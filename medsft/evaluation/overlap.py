"""A run's test items against the rows it trains on (contamination.py measures): every training dataset and mixture
part the run weighs above zero, and the training rows of each earlier run of its chain (a stage's start, and the
starts before it). Checked once per evaluation and reported per dataset (`contamination` in eval_results.json); with
`decontaminate: true` the training rows behind contaminated items are removed before training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from medsft.data.datasets import Dataset, load, weighted
from medsft.errors import UserError
from medsft.evaluation import contamination
from medsft.recipe import mixture


@dataclass
class Training:
    """The rows a run trains on, as (key, text): a key names the dataset (and the earlier run) and the row's id."""

    names: list[str] = field(default_factory=list)  # what was checked against, for the report
    rows: list[tuple[str, str]] = field(default_factory=list)


def _key(dataset: Dataset, row: dict, prefix: str = "") -> str:
    """A training row's key: its dataset's name and its id (after the earlier run's folder, for a chain's rows)."""
    return f"{prefix}{dataset.spec.name}/{row['id']}"


def _rows(datasets: list[Dataset], prefix: str = "", every: bool = False) -> list[tuple[str, str]]:
    """(key, text) of the training rows a run trains on (`every`: all of a partly weighted dataset's, which a
    removal may redraw from)."""
    out = []
    for d in datasets:
        if d.spec.weight <= 0:
            continue
        part = d.parts["train"] if every or d.spec.weight >= 1 else weighted(d.parts["train"], d.spec.weight, d.spec.split_seed)
        for row in part:
            example = d.task.example(row)
            if example is not None:
                out.append((_key(d, row, prefix), example.flat()))
    return out


def earlier_runs(model_name_or_path: str | None) -> list[Path]:
    """The run folders a stage descends from: the start's own chain, then the start."""
    from medsft.runs import run_folder

    if not model_name_or_path or not Path(model_name_or_path).is_dir():
        return []
    folder = run_folder.folder_of(Path(model_name_or_path))
    if folder is None:
        return []
    return [Path(entry["run"]) for entry in run_folder.chain(folder) if "run" in entry] + [folder]


def run_datasets(recipe, scored: list[Dataset], recorded: dict | None) -> list[Dataset]:
    """The datasets a run trained on: those it scores, or for a suite evaluation its own, loaded by its recorded ids."""
    return load(mixture.specs(recipe.script, recipe.training), recorded) if recipe.script.suite else scored


def trained_on(recipe, own: list[Dataset]) -> Training:
    """Every row the run trains on: its own datasets' training rows (as training holds them: after decontaminate),
    then each earlier run's."""
    from medsft.runs import records, run_folder

    training = Training([f"{d.spec.name} (train)" for d in own if d.spec.weight > 0], _rows(own))
    for run in earlier_runs(recipe.model.model_name_or_path):
        try:
            earlier = run_folder.parse_run(run, [])
            loaded = load(mixture.specs(earlier.script, earlier.training), records.read_ids(str(run)))
        except UserError as e:  # its data gone or unreachable: said, not silently skipped
            training.names.append(f"{run} (not checked: {e})")
            continue
        training.names += [f"{run}: {d.spec.name} (train)" for d in loaded if d.spec.weight > 0]
        training.rows += _rows(loaded, f"{run}:")
    return training


def check(datasets: list[Dataset], training: Training, script) -> dict[str, dict]:
    """{dataset name: its contamination record} for every dataset's test items, in one pass over the training rows."""
    items = [(d.spec.name, r["id"], d.task.content(r)) for d in datasets for r in d.parts["test"]]
    found = contamination.check([text for *_, text in items], training.rows, script.contamination_ngram,
                                script.contamination_threshold)
    contaminated, unchecked = set(found.contaminated), set(found.unchecked)  # the check's own definitions
    out = {}
    for d in datasets:
        mine = [i for i, item in enumerate(items) if item[0] == d.spec.name]
        hit = [i for i in mine if i in contaminated]
        out[d.spec.name] = {
            "ids": [items[i][1] for i in hit], "share": len(hit) / len(mine) if mine else 0.0,
            "threshold": found.threshold, "ngram": found.ngram, "checked_against": training.names,
            "training_rows": found.training_rows, "unchecked": sum(i in unchecked for i in mine),
            "rows": {items[i][1]: found.rows[i] for i in hit},
        }
    return out


def decontaminate(recipe, datasets: list[Dataset]) -> dict[str, list[str]]:
    """Remove from `datasets`' training rows those behind any contaminated item the run scores (its test splits and,
    with `suite`, the suite's); {dataset name: the removed ids}."""
    from medsft.evaluation import suites

    scored = [d for d in datasets if d.parts["test"]]
    if recipe.script.suite:
        scored += load(suites.specs(recipe.script.suite, recipe.script.suite_data, recipe.script.prompt_style))
    records = check(scored, Training(rows=_rows(datasets, every=True)), recipe.script)
    behind = {key for record in records.values() for keys in record["rows"].values() for key in keys}
    removed: dict[str, list[str]] = {}
    for d in datasets:
        gone = [_key(d, r) in behind for r in d.parts["train"]]
        if any(gone):
            removed[d.spec.name] = [r["id"] for r, g in zip(d.parts["train"], gone) if g]
            d.parts = {**d.parts, "train": [r for r, g in zip(d.parts["train"], gone) if not g]}
            digest = hashlib.sha256("\n".join(removed[d.spec.name]).encode()).hexdigest()[:16]
            d.key = f"{d.key}-less-{digest}"  # its tokenized rows are cached under what they were prepared from
    return removed
