"""A run's test items checked against every row it trains on (ngram_coverage.py measures): every training dataset and
mixture part the run weighs above zero, and the training rows of each earlier run of its chain (a stage's start, and
the starts before it). Checked once per command and reported per dataset (`contamination` in eval_results.json; the
preview's lines). The result is kept with the prepared data, under a key of everything it is computed from (the items'
and the training rows' prepared-data keys, the weights, the earlier runs, the settings and this code): a command on
data prepared before reads it back instead of splitting and hashing every training row again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from medsft.data import cache
from medsft.data.datasets import Dataset, load, weighted
from medsft.errors import UserError
from medsft.evaluation import ngram_coverage
from medsft.evaluation.sharing import Track, no_track
from medsft.recipe import mixture


@dataclass
class Training:
    """The rows a run trains on, named for the report and read only when the check is computed: (key prefix, the
    datasets, whether all of a partly weighted dataset's rows count) for the run's own data and each earlier run's."""

    names: list[str] = field(default_factory=list)  # what was checked against, for the report
    parts: list[tuple[str, list[Dataset], bool]] = field(default_factory=list)

    def rows(self):
        """(key, text) of every training row, streamed: a key names the dataset (and the earlier run) and the row."""
        for prefix, datasets, every in self.parts:
            yield from _rows(datasets, prefix, every)

    def size(self) -> int:
        return sum(len(d.parts["train"]) for _, datasets, _ in self.parts for d in datasets if d.spec.weight > 0)

    def key(self) -> list:
        """What the rows are made from: each dataset's prepared-data key and weight."""
        return [self.names, [(prefix, every, [(d.key, d.spec.weight, d.spec.split_seed) for d in datasets])
                             for prefix, datasets, every in self.parts]]


def row_key(dataset: Dataset, row: dict, prefix: str = "") -> str:
    """A training row's key: its dataset's name and its id (after the earlier run's folder, for a chain's rows)."""
    return f"{prefix}{dataset.spec.name}/{row['id']}"


def _rows(datasets: list[Dataset], prefix: str = "", every: bool = False):
    """(key, text) of the training rows a run trains on (`every`: all of a partly weighted dataset's, which a
    removal may redraw from)."""
    for d in datasets:
        if d.spec.weight <= 0:
            continue
        part = d.parts["train"] if every or d.spec.weight >= 1 else weighted(d.parts["train"], d.spec.weight, d.spec.split_seed)
        for row in part:
            example = d.task.example(row)
            if example is not None:
                yield row_key(d, row, prefix), example.flat()


def own(datasets: list[Dataset], every: bool = False) -> Training:
    """A run's own training rows (`every`: a partly weighted dataset's all), without its chain's."""
    return Training([f"{d.spec.name} (train)" for d in datasets if d.spec.weight > 0], [("", datasets, every)])


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


def trained_on(recipe, datasets: list[Dataset]) -> Training:
    """Every row the run trains on: its own datasets' training rows (as training holds them: after decontaminate),
    then each earlier run's."""
    from medsft.runs import records, run_folder

    training = own(datasets)
    for run in earlier_runs(recipe.model.model_name_or_path):
        try:
            earlier = run_folder.parse_run(run, [])
            loaded = load(mixture.specs(earlier.script, earlier.training), records.read_ids(str(run)))
        except UserError as e:  # its data gone or unreachable: said, not silently skipped
            training.names.append(f"{run} (not checked: {e})")
            continue
        training.names += [f"{run}: {d.spec.name} (train)" for d in loaded if d.spec.weight > 0]
        training.parts.append((f"{run}:", loaded, False))
    return training


def _code() -> str:
    """This module's and the measure's source: a change to either computes the check again."""
    here = Path(__file__)
    return hashlib.sha256(here.read_bytes() + here.with_name("ngram_coverage.py").read_bytes()).hexdigest()


def check(datasets: list[Dataset], training: Training, script, track: Track = no_track) -> dict[str, dict]:
    """{dataset name: its contamination record} for every dataset's test items, in one pass over the training rows;
    read back from the data cache where the same items were checked against the same rows before."""
    scored = [d for d in datasets if d.parts["test"]]
    key = cache.digest({"items": [(d.spec.name, d.key) for d in scored], "training": training.key(),
                        "ngram": script.contamination_ngram, "threshold": script.contamination_threshold,
                        "code": _code(), "data": cache.code_version()})
    return cache.cached_json("contamination", key, lambda: _checked(scored, training, script, track))


def _checked(datasets: list[Dataset], training: Training, script, track: Track) -> dict[str, dict]:
    items = [(d.spec.name, r["id"], d.task.content(r)) for d in datasets for r in d.parts["test"]]
    found = ngram_coverage.check([text for *_, text in items], training.rows(), script.contamination_ngram,
                                 script.contamination_threshold, track, training.size())
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
