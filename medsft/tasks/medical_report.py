"""Medical report completion: the whole note as language modelling, or prompt = note up to a header, completion = that section."""

from __future__ import annotations

import re
from typing import Any

from medsft.tasks.base import Example, Task

# A section header is a run of capitals (spaces, slashes, ampersands allowed) ending in a colon: "IMPRESSION:".
# MTSamples often glues headers to the previous sentence ("...yet.PLAN:"), so no line start is required.
# Openings of the kind a clinician dictates: what whole-note models continue when the recipe names no prompts.
CLINICAL_OPENINGS = (
    "Patient presents with fever and a persistent cough",
    "HISTORY OF PRESENT ILLNESS: The patient is a 67-year-old male with chest pain",
    "IMPRESSION:",
)
_HEADER = re.compile(r"(?<![A-Za-z])[A-Z][A-Z /&()-]{2,}:")


def normalize(raw: dict[str, Any], key: str | None = None, text_field: str = "text") -> dict[str, Any]:
    text = raw.get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise KeyError(text_field)
    rid = raw.get("id", key if key is not None else "")
    return {"id": str(rid), "text": text.strip(), "specialty": str(raw.get("specialty", ""))}


def split_section(text: str, header: str) -> tuple[str, str] | None:
    """(text up to and including `header`, the section body) or None when the note has no such section."""
    # Not inside a longer header: "DIAGNOSIS:" must not match "POSTOPERATIVE DIAGNOSIS:".
    match = re.search(r"(?<![A-Za-z])(?<![A-Z] )" + re.escape(header), text)
    if match is None:
        return None
    body_start = match.end()
    nxt = _HEADER.search(text, body_start)
    body = text[body_start : nxt.start() if nxt else len(text)].strip()
    if not body:
        return None
    return text[:body_start], " " + body


def format_row(row: dict[str, Any], section: str | None = None) -> dict[str, str] | None:
    """None when `section` is asked for and the note lacks it (the row is skipped and counted)."""
    if section is None:
        return {"prompt": "", "completion": row["text"]}
    parts = split_section(row["text"], section)
    if parts is None:
        return None
    return {"prompt": parts[0], "completion": parts[1]}


class Report(Task):
    name = "report"
    options = ("section", "dataset_text_field")
    split_sizes = (0.05, 0.05)  # notes are scarce: most of them train

    def row(self, raw, key):
        # The id column of MTSamples-like data repeats across subsets; the source position is unique.
        return {**normalize(raw, key, self.spec.dataset_text_field), "id": key}

    def prepare(self, rows):
        seen, kept = set(), []
        for row in rows:  # MTSamples lists 415 notes twice under two subsets
            if row["text"] not in seen:
                seen.add(row["text"])
                kept.append(row)
        return kept

    def example(self, row):
        formatted = format_row(row, self.spec.section)
        if formatted is None:
            return None
        if self.spec.section is None:
            return Example(completion=formatted["completion"], text=True)
        return Example(formatted["prompt"], formatted["completion"], cue=self.spec.section)

    def samples(self, rows, n, seed, prompts=None):
        if self.spec.section is None and not prompts:
            return [{"input": p, "prompt": p} for p in CLINICAL_OPENINGS[:n]]
        return super().samples(rows, n, seed, prompts)

    def synthetic(self, n, seed):
        from medsft.tasks import synthetic

        return synthetic.report_rows(n, seed)
