"""Medical report completion: the whole note as language modelling, or prompt = note up to a header, completion = that section."""

from __future__ import annotations

import re
from typing import Any

# A section header is a run of capitals (spaces, slashes, ampersands allowed) ending in a colon: "IMPRESSION:".
# MTSamples often glues headers to the previous sentence ("...yet.PLAN:"), so no line start is required.
_HEADER = re.compile(r"(?<![A-Za-z])[A-Z][A-Z /&()-]{2,}:")


def normalize(raw: dict[str, Any], key: str | None = None, text_field: str = "text") -> dict[str, Any]:
    text = raw.get(text_field)
    if not isinstance(text, str) or not text.strip():
        raise KeyError(text_field)
    rid = raw.get("id", raw.get("file", key if key is not None else ""))
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
