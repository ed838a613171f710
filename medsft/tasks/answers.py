"""The answer a generated reply gives to a choice item, read one way for evaluation and for GRPO's rewards.

strict: the reply's first line states one option and nothing else ("B", "(B)", "B. Aspirin", "The answer is (B).",
"Answer: yes", "**Maybe**"), or after reasoning its last line does ("... The answer is (C)."); lenient: the first option the reply names anywhere, by its label or its text; neither:
the reply is unparseable, and it is counted wrong, never mapped to an option (a model that stops answering must show
as one). A reasoning block (<think>...</think>) is skipped first; a reply still inside one has no answer yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# "The answer is", "Final answer:", "Correct option -", "So the answer is" before the option.
_LEAD = r"(?:(?:so,?\s+|thus,?\s+|therefore,?\s+)?(?:the\s+|my\s+)?(?:final\s+|correct\s+|best\s+|right\s+)?" \
        r"(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*)?"
_MARKUP = re.compile(r"[*_`]+")  # markdown emphasis around the answer


@dataclass(frozen=True)
class Answer:
    strict: str | None  # the option the reply states, or None
    lenient: str | None  # the first option it names (the strict one where there is one), or None: unparseable


def visible(reply: str) -> str:
    """The reply without its reasoning: what follows the last </think>, and nothing of a block left open."""
    if "</think>" in reply:
        reply = reply.rsplit("</think>", 1)[1]
    return reply.split("<think>", 1)[0].strip()


def _words(text: str) -> str:
    return " ".join(text.split())


def _states(line: str, options: dict[str, str], lead: str) -> str | None:
    """The option `line` states, alone (its label, or its label and text), after `lead`; None otherwise."""
    line = _words(_MARKUP.sub("", line))
    for label, option in options.items():
        tail = rf"(?:\s*[.:)\-]?\s*{re.escape(_words(option))})?" if option != label else ""
        if re.fullmatch(rf"{lead}[(\[]?{re.escape(label)}[)\]]?{tail}\s*[.!]?", line, flags=re.IGNORECASE):
            return label
    return None


def strict(reply: str, options: dict[str, str]) -> str | None:
    """The option the reply states: its first line is the option alone (its label, its label and text, behind "The
    answer is"), or, after reasoning, its last line says "The answer is ..." / "Answer: ..." of one option."""
    lines = [line for line in visible(reply).split("\n") if line.strip()]
    if not lines:
        return None
    first = _states(lines[0], options, _LEAD)
    return first if first is not None or len(lines) == 1 else _states(lines[-1], options, _LEAD.removesuffix("?"))


def _label_pattern(label: str) -> re.Pattern:
    if len(label) == 1 and label.isalpha():
        # a capital standing alone ("A or B", "(C)", "D."), not the article or pronoun of a sentence ("A patient ...")
        article = r"(?!\s+(?!or\b|and\b|nor\b)[a-z])" if label in "AI" else ""
        return re.compile(rf"(?<![\w'’\-]){re.escape(label)}(?![\w'’\-]){article}")
    return re.compile(rf"(?<!\w){re.escape(label)}(?!\w)", re.IGNORECASE)


def lenient(reply: str, options: dict[str, str]) -> str | None:
    """The option named first in the reply, by its label or by its text (the longest where two start together)."""
    text = _words(_MARKUP.sub("", visible(reply)))
    found = []
    for label, option in options.items():
        for pattern in (_label_pattern(label), re.compile(rf"(?<!\w){re.escape(_words(option))}(?!\w)", re.IGNORECASE)):
            hit = pattern.search(text)
            if hit and option.strip():
                found.append((hit.start(), -(hit.end() - hit.start()), label))
    return min(found)[2] if found else None


def extract(reply: str, options: dict[str, str]) -> Answer:
    """The reply's answer among `options` ({label: text}; a yes/no/maybe item's text is its label)."""
    first = strict(reply, options)
    return Answer(first, first if first is not None else lenient(reply, options))
