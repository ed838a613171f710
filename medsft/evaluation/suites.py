"""Benchmark suites for `medsft eval ... --suite NAME`: each benchmark a dataset spec of the same machinery.

`medical`: PubMedQA (its official 500-item test split), MedQA-USMLE (4 options, 1273 test items), MedMCQA (its dev
set, 2816 items: its test answers are not public) and the six medical subjects of MMLU (1089 test items). From the
local folder `suite_data` names (else `$MEDSFT_DATA`), else from the hub ids listed in `_hub`. Items a run trained
or tuned on are left out of its suite.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from medsft.recipe.keys import DataSpec
from medsft.errors import UserError

MMLU_SUBJECTS = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                 "professional_medicine")
LETTERS = ["opa", "opb", "opc", "opd"]


def _local(root: Path) -> list[dict]:
    mcq = root / "mcq"
    return [
        {"name": "pubmedqa", "task": "pubmedqa", "dataset_name": str(root / "pubmedqa" / "ori_pqal.json")},
        {"name": "medqa", "task": "medqa", "data_files": {"test": str(mcq / "medqa.jsonl")}},
        {"name": "medmcqa", "task": "medmcqa", "data_files": {"test": str(mcq / "medmcqa.jsonl")}},
        {"name": "mmlu", "task": "mmlu", "data_files": {"test": str(mcq / "mmlu.jsonl")}},
    ]


def _hub() -> list[dict]:
    return [
        {"name": "pubmedqa", "task": "pubmedqa", "dataset_name": "qiaojin/PubMedQA", "dataset_config": "pqa_labeled"},
        {"name": "medqa", "task": "medqa", "dataset_name": "GBaker/MedQA-USMLE-4-options-hf", "question_field": "sent1",
         "options_field": None, "option_fields": [f"ending{i}" for i in range(4)], "answer_field": "label"},
        {"name": "medmcqa", "task": "medmcqa", "dataset_name": "openlifescienceai/medmcqa", "test_split": "validation",
         "options_field": None, "option_fields": LETTERS, "answer_field": "cop"},
        *({"name": f"mmlu_{s}", "task": "mmlu", "dataset_name": "cais/mmlu", "dataset_config": s, "options_field": "choices",
           "answer_field": "answer"} for s in MMLU_SUBJECTS),
    ]


SUITES = {"medical": lambda root: _local(root) if root is not None else _hub()}


def specs(name: str, data: str | None, prompt_style: str) -> list[DataSpec]:
    """The suite's benchmarks, each scored on its test split only (nothing of them trains)."""
    if name not in SUITES:
        raise UserError(f"suite {name!r} is not known; suites are {', '.join(SUITES)}")
    key, data = ("suite_data", data) if data else ("MEDSFT_DATA", os.environ.get("MEDSFT_DATA") or None)
    root = Path(data).expanduser() if data else None
    if root is not None and not root.is_dir():
        raise UserError(f"{key} {root} is not a folder; give the folder holding pubmedqa/ and mcq/")
    out = []
    for entry in SUITES[name](root):
        spec = dataclasses.replace(DataSpec(), prompt_style=prompt_style, weight=0, **entry)
        out.append(spec)
    return out


def leave_out(datasets, recorded: dict[str, dict[str, list[str]]] | None) -> dict[str, int]:
    """Drop from each suite benchmark's test rows the items a run trained or tuned on; {name: how many}."""
    seen = {i for parts in (recorded or {}).values() for role in ("train", "eval") for i in parts.get(role, [])}
    dropped = {}
    for d in datasets:
        kept = [r for r in d.parts["test"] if r["id"] not in seen]
        dropped[d.spec.name] = len(d.parts["test"]) - len(kept)
        d.parts = {"train": [], "eval": [], "test": kept}
    return dropped
