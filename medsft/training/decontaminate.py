"""`decontaminate: true`: the training rows behind contaminated test items removed before anything is tokenized, so
that the run never trains on what it is scored on (evaluation/contamination.py finds them). Part of preparing the
run's data: `train`, `preview` and `cv` see the rows as training will."""

from __future__ import annotations

import hashlib

from medsft.data.datasets import Dataset, load
from medsft.evaluation import contamination, suites
from medsft.evaluation.sharing import Track, no_track


def decontaminate(recipe, datasets: list[Dataset], track: Track = no_track) -> dict[str, list[str]]:
    """Remove from `datasets`' training rows those behind any contaminated item the run scores (its test splits and,
    with `suite`, the suite's); {dataset name: the removed ids}."""
    scored = [d for d in datasets if d.parts["test"]]
    if recipe.script.suite:
        scored += load(suites.specs(recipe.script.suite, recipe.script.suite_data, recipe.script.prompt_style))
    records = contamination.check(scored, contamination.own(datasets, every=True), recipe.script, track)
    behind = {key for record in records.values() for keys in record["rows"].values() for key in keys}
    removed: dict[str, list[str]] = {}
    for d in datasets:
        gone = [contamination.row_key(d, r) in behind for r in d.parts["train"]]
        if any(gone):
            removed[d.spec.name] = [r["id"] for r, g in zip(d.parts["train"], gone) if g]
            d.parts = {**d.parts, "train": [r for r, g in zip(d.parts["train"], gone) if not g]}
            digest = hashlib.sha256("\n".join(removed[d.spec.name]).encode()).hexdigest()[:16]
            d.key = f"{d.key}-less-{digest}"  # its tokenized rows are cached under what they were prepared from
    return removed
