"""`medsft compare`: runs (or evaluations) scored on the same items the same way, side by side: each one's numbers
with its intervals, and every pair tested on the items (exact McNemar on accuracy; a paired bootstrap for macro-F1 and
perplexity), the p-values of each metric adjusted by Holm's method for the number of pairs. Folders whose protocols
differ, or whose items do, are refused: their numbers are not comparable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.evaluation import protocol, stats
from medsft.runs import records


@dataclass
class Scored:
    label: str  # how the report names it
    folder: Path
    evaluations: dict[tuple[str, str | None], dict]  # (dataset, scoring) -> its evaluation
    predictions: dict[tuple[str, str | None], dict[str, dict]]  # (dataset, scoring) -> {item id: row}


def _model(evaluation: dict) -> str:
    """The model a folder stands for: its tuned model, or for an evaluation of a model alone, that model."""
    return "tuned" if "tuned" in evaluation["models"] else next(iter(evaluation["models"]))


def read(folder: Path, label: str) -> Scored:
    results = folder / records.EVAL_RESULTS
    if not results.is_file():
        raise UserError(f"{folder} holds no {records.EVAL_RESULTS}: evaluate it first (python -m medsft eval {folder})")
    evaluations = {(e["name"], e.get("scoring")): e for e in json.loads(results.read_text())["evaluations"]}
    for e in evaluations.values():
        if "protocol" not in e:
            raise UserError(f"{results} records no protocol (evaluated before medsft recorded one): evaluate it again "
                            f"(python -m medsft eval {folder})")
    predictions: dict = {key: {} for key in evaluations}
    if not (folder / records.PREDICTIONS).is_file():  # the items' answers are what the pairs are tested on
        raise UserError(f"{folder} holds {records.EVAL_RESULTS} but no {records.PREDICTIONS}, the per-item answers the "
                        f"paired tests need: evaluate it again (python -m medsft eval {folder})")
    for line in (folder / records.PREDICTIONS).read_text().splitlines():
        row = json.loads(line)
        predictions.setdefault((row["dataset"], row.get("scoring")), {})[row["id"]] = row
    return Scored(label, folder, evaluations, predictions)


def _labels(folders: list[Path]) -> list[str]:
    """Each folder's name, or its last two parts where two share a name."""
    names = [f.name or str(f) for f in folders]
    return [f"{f.parent.name}/{f.name}" if names.count(n) > 1 else n for f, n in zip(folders, names)]


def _check(first: Scored, other: Scored, key) -> None:
    name = key[0] + (f" ({key[1]})" if key[1] else "")
    if key not in other.evaluations:
        raise UserError(f"{other.folder} has no evaluation of {name}, which {first.folder} has; compare folders that "
                        "scored the same datasets")
    a, b = set(first.predictions[key]), set(other.predictions[key])
    if a != b:
        raise UserError(f"{first.folder} and {other.folder} scored different items of {name} ({len(a - b)} of "
                        f"{len(a)} not shared); compare evaluations of the same items")
    pa, pb = first.evaluations[key]["protocol"], other.evaluations[key]["protocol"]
    field = protocol.first_difference(pa, pb)
    if field is not None:
        raise UserError(f"{first.folder} and {other.folder} did not score {name} alike: {field} is "
                        f"{protocol.shown(pa.get(field))} in one and {protocol.shown(pb.get(field))} in the other: "
                        f"{protocol.WHY.get(field, 'they were scored differently')}; their numbers are not comparable")


def _headline(evaluation: dict) -> dict[str, Any]:
    metrics = evaluation["models"][_model(evaluation)]
    keys = ("accuracy", "macro_f1") if "labels" in evaluation else ("perplexity",)
    return {k: {"value": metrics[k], "ci": metrics.get("ci", {}).get(k)} for k in keys}


def _pair(key, first: Scored, second: Scored, seed: int) -> list[dict]:
    """`second` against `first` on their shared items, one entry per metric."""
    evaluation = first.evaluations[key]
    ids = sorted(first.predictions[key])
    rows_a, rows_b = [first.predictions[key][i] for i in ids], [second.predictions[key][i] for i in ids]
    ma, mb = _model(evaluation), _model(second.evaluations[key])
    if "labels" in evaluation:
        gold = [r["gold"] for r in rows_a]
        test = stats.paired(gold, [r[f"{ma}_prediction"] for r in rows_a], [r[f"{mb}_prediction"] for r in rows_b],
                            evaluation["labels"], seed)
        return [{"metric": "accuracy", "delta": test["accuracy_delta"], "ci": test["accuracy_delta_ci"],
                 "p": test["p_value"], "test": "exact McNemar"},
                {"metric": "macro_f1", "delta": test["macro_f1_delta"], "ci": test["macro_f1_delta_ci"],
                 "p": test["macro_f1_p_value"], "test": "paired bootstrap"}]
    if "tokens" not in rows_a[0]:
        raise UserError(f"{first.folder / records.PREDICTIONS} holds no token counts (written before medsft recorded "
                        f"them): evaluate it again (python -m medsft eval {first.folder})")
    test = stats.paired_perplexity([r[f"{ma}_loglik"] for r in rows_a], [r[f"{mb}_loglik"] for r in rows_b],
                                   [r["tokens"] for r in rows_a], seed)
    return [{"metric": "perplexity", "ratio": test["perplexity_ratio"], "ci": test["perplexity_ratio_ci"],
             "p": test["p_value"], "test": "paired bootstrap"}]


def compare(folders: list[Path], seed: int = 0) -> dict[str, Any]:
    """The comparison as `--json` prints it and the table shows it."""
    if len(folders) < 2:
        raise UserError("compare needs at least two run or evaluation folders")
    scored = [read(f, label) for f, label in zip(folders, _labels(folders))]
    first = scored[0]
    for other in scored[1:]:
        for key in first.evaluations:
            _check(first, other, key)
        for key in other.evaluations:
            if key not in first.evaluations:
                _check(other, first, key)
    out = []
    for key, evaluation in first.evaluations.items():
        pairs = []
        for a, b in combinations(scored, 2):
            pairs += [{"first": a.label, "second": b.label, **entry} for entry in _pair(key, a, b, seed)]
        for metric in {p["metric"] for p in pairs}:  # Holm over the pairs, metric by metric
            mine = [p for p in pairs if p["metric"] == metric]
            for p, adjusted in zip(mine, stats.holm([p["p"] for p in mine])):
                p["p_holm"] = adjusted
        out.append({"name": key[0], "scoring": key[1], "task": evaluation["task"], "n": evaluation["n"],
                    "protocol": {k: v for k, v in evaluation["protocol"].items() if k not in protocol.IDENTITY},
                    "models": {s.label: {"folder": str(s.folder), **_headline(s.evaluations[key])} for s in scored},
                    "pairs": pairs})
    return {"folders": [str(f) for f in folders], "evaluations": out}
