"""PubMedQA: abstract + question -> yes / no / maybe (and optionally the long answer), on the official split."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from medsft.tasks.base import Task

CHOICES = ("yes", "no", "maybe")
REQUIRED = ("question", "contexts", "final_decision")
# The official split: 1000 public PubMed ids (MIT, from the PubMedQA release) that define the benchmark, shipped in
# the package as lm-evaluation-harness's task files name their splits, so every copy of PubMedQA (the hub's, the
# original ori_pqal.json, a parquet folder in the hub layout) is scored on the same 500 items, offline.
SPLIT_FILE = "pubmedqa_split.json"


def normalize(raw: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """One row of either schema -> {id, question, contexts, labels, long_answer, final_decision}.

    The original release (`ori_pqal.json`, keyed by PMID) spells fields QUESTION / CONTEXTS / LABELS / LONG_ANSWER;
    the hub copy (`qiaojin/PubMedQA`, pqa_labeled) uses pubid / question / context{contexts,labels} / long_answer.
    Raises KeyError naming the missing field and ValueError for a label outside yes/no/maybe.
    """
    if "QUESTION" in raw or "CONTEXTS" in raw:
        row = {
            "id": str(raw.get("pubid", key if key is not None else raw.get("id", ""))),
            "question": raw.get("QUESTION"),
            "contexts": raw.get("CONTEXTS"),
            "labels": raw.get("LABELS") or [],
            "long_answer": raw.get("LONG_ANSWER") or "",
            "final_decision": raw.get("final_decision"),
        }
    else:
        context = raw.get("context")
        contexts = context.get("contexts") if isinstance(context, dict) else raw.get("contexts", context)
        labels = context.get("labels") if isinstance(context, dict) else raw.get("labels")
        row = {
            "id": str(raw.get("pubid", raw.get("id", key if key is not None else ""))),
            "question": raw.get("question"),
            "contexts": [contexts] if isinstance(contexts, str) else contexts,
            "labels": list(labels or []),
            "long_answer": raw.get("long_answer") or "",
            "final_decision": raw.get("final_decision"),
        }
    for name in REQUIRED:
        if row[name] is None:
            raise KeyError(name)
    decision = str(row["final_decision"]).strip().lower()
    if decision not in CHOICES:
        raise ValueError(f"final_decision {row['final_decision']!r} is not one of yes/no/maybe")
    row["final_decision"] = decision
    row["contexts"] = [str(c) for c in row["contexts"]]
    return row


def question_cue(row: dict[str, Any], style: str = "medsft") -> str:
    if style == "lm_eval":
        return "\nQuestion: " + row["question"] + "\nAnswer:"
    return f"\n\nQuestion: {row['question']}\nAnswer (yes, no or maybe):"


def prompt(row: dict[str, Any], style: str = "medsft") -> str:
    if style == "lm_eval":  # lm-evaluation-harness pubmedqa doc_to_text, character for character
        return "Abstract: " + "\n".join(row["contexts"]) + question_cue(row, style)
    labels = row.get("labels") or []
    if len(labels) == len(row["contexts"]):
        sections = [f"{label.capitalize()}: {text}" for label, text in zip(labels, row["contexts"])]
    else:
        sections = list(row["contexts"])
    # The question comes last so that left-truncation of a long abstract never removes it.
    return "Abstract:\n" + "\n".join(sections) + question_cue(row, style)


def format_row(row: dict[str, Any], style: str = "medsft", include_long_answer: bool = False) -> dict[str, str]:
    completion = " " + row["final_decision"] if row.get("final_decision") else ""  # none for a question asked live
    if include_long_answer and row.get("long_answer"):
        completion += ". " + row["long_answer"]
    return {"prompt": prompt(row, style), "completion": completion}


@cache
def official_ids() -> dict[str, Any]:
    """{"test": the official 500 test PMIDs, "folds": 10 folds of 50 of the other 500} (and the file's source and
    licence lines)."""
    return json.loads(files("medsft.tasks").joinpath(SPLIT_FILE).read_text(encoding="utf-8"))


class PubMedQA(Task):
    name = "pubmedqa"
    options = ("prompt_style", "calibrate", "calibration_file", "include_long_answer", "chat", "system_prompt")
    choices = True
    split_sizes = (0.05, 0.5)  # PubMedQA's own proportions where the ids are not the official ones: 450 / 50 / 500

    def row(self, raw, key):
        return normalize(raw, key)

    def example(self, row):
        formatted = format_row(row, self.spec.prompt_style, self.spec.include_long_answer)
        return self.formatted(formatted["prompt"], formatted["completion"], question_cue(row, self.spec.prompt_style))

    def labels(self):
        return list(CHOICES)

    def gold(self, row):
        return row.get("final_decision")

    def continues(self):
        return self.spec.include_long_answer

    def cli_row(self, question, context):
        return {"id": "cli", "question": question, "contexts": [context], "labels": [], "final_decision": None}

    def official_split(self):
        return official_ids()

    def synthetic(self, n, seed):
        from medsft.tasks import synthetic

        return synthetic.pubmedqa_rows(n, seed)
