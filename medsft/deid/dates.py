"""Dates as notes write them, found and shifted in their own written form: 03/14/2023, 3-14-23, 2023-03-14,
14-Mar-2023, 14 March 2023, March 14th, 2023, Mar. 14, March 2023, the 14th of March, "on the 14th", and a month and
day after "on", "dated", "since" (3/14). A bare year is not an identifier (Safe Harbor keeps years) and is never
matched alone. Each form knows its parts, so a shift by whole days writes the new date with the same parts, order,
separators, padding, month spelling and ordinal suffix: intervals between shifted dates are kept, and a shift by whole
weeks keeps every weekday."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass

MONTHS = [m for m in calendar.month_name if m]
SHORT = [m[:3] for m in MONTHS]
def _months() -> str:
    """Month names as notes write them: capitalized or upper case, in full or short (Sept too), with a period."""
    words = []
    for name in MONTHS:
        for word in {name, name[:3], *(["Sept"] if name == "September" else [])}:
            words += [word, word.upper()]
    return "|".join(sorted(set(words), key=len, reverse=True))


_MONTH = rf"(?P<month>(?:{_months()})\.?)"
_DAY = r"(?P<day>[0-3]?\d)(?P<suffix>st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d{2}|'?\d{2})"
_CUE = r"(?:on|dated|since|from|until|till|through|by|of|DOB|DOS|date|admitted|discharged|seen)\s*:?\s+"
REFERENCE_YEAR = 2000  # a leap year: a month and day without a year are shifted as if in it


@dataclass(frozen=True)
class Form:
    name: str
    pattern: re.Pattern
    starts_at: str | None = None  # the group the date starts at, where the pattern matches a cue before it


FORMS = [
    Form("iso", re.compile(r"\b(?P<year>(?:19|20)\d{2})(?P<sep>[-/.])(?P<month>[01]?\d)(?P=sep)(?P<day>[0-3]?\d)\b")),
    Form("numeric", re.compile(r"\b(?P<month>[0-3]?\d)(?P<sep>[/.-])(?P<day>[0-3]?\d)(?P=sep)(?P<year>(?:19|20)\d{2}|\d{2})\b(?![/.-]\d)")),
    Form("day-month-year", re.compile(rf"\b{_DAY}(?P<sep>[- ])(?:of )?{_MONTH}(?:[-, ]+){_YEAR}\b")),
    Form("month-day-year", re.compile(rf"\b{_MONTH} {_DAY}(?:,? +|, *){_YEAR}\b")),
    Form("month-year", re.compile(rf"\b{_MONTH},? (?P<year>(?:19|20)\d{{2}})\b")),
    Form("day-month", re.compile(rf"\b{_DAY} (?:of )?{_MONTH}(?![-, ]*(?:19|20)\d\d)(?!\w)")),
    Form("month-day", re.compile(rf"\b{_MONTH} {_DAY}\b(?!,? *(?:19|20)\d\d)(?![:.]\d)")),
    Form("cued-month-day", re.compile(rf"\b{_CUE}(?P<month>[01]?\d)/(?P<day>[0-3]?\d)\b(?![/.]\d)", re.IGNORECASE), "month"),
    Form("on-the-day", re.compile(rf"\bon the {_DAY}\b(?! of)", re.IGNORECASE), "day"),
]
_BARE = {"cued-month-day": re.compile(r"(?P<month>[01]?\d)/(?P<day>[0-3]?\d)"),  # what such a span holds alone
         "on-the-day": re.compile(r"(?P<day>[0-3]?\d)(?P<suffix>st|nd|rd|th)?", re.IGNORECASE)}


@dataclass(frozen=True)
class Found:
    start: int
    end: int
    form: str


def _month(text: str) -> int:
    return SHORT.index(text.rstrip(".")[:3].title()) + 1


def _parts(form: Form, m: re.Match) -> dict | None:
    """The date's parts (month, day, year; None where the form has none), or None where they are no date."""
    g = m.groupdict()
    try:
        month = _month(g["month"]) if g.get("month") and not g["month"][:1].isdigit() else int(g["month"]) if g.get("month") else None
        day = int(g["day"]) if g.get("day") else None
    except ValueError:
        return None
    year = g.get("year")
    if form.name == "numeric" and month is not None and month > 12 and day is not None and day <= 12:
        month, day = day, month  # 14/03/2023: day first
    if (month is not None and not 1 <= month <= 12) or (day is not None and not 1 <= day <= 31):
        return None
    if month is not None and day is not None:
        full = int(year.lstrip("'")) if year and len(year.lstrip("'")) == 4 else REFERENCE_YEAR
        if day > calendar.monthrange(full, month)[1]:
            return None
    return {"month": month, "day": day, "year": year}


def find(text: str) -> list[Found]:
    """Every date in `text`, the longest form where two overlap (a cue word before a date is left out)."""
    found: list[Found] = []
    taken = [False] * (len(text) + 1)
    for form in FORMS:
        for m in form.pattern.finditer(text):
            start = m.start(form.starts_at) if form.starts_at else m.start()
            if any(taken[start:m.end()]) or _parts(form, m) is None:
                continue
            found.append(Found(start, m.end(), form.name))
            for i in range(start, m.end()):
                taken[i] = True
    return sorted(found, key=lambda f: f.start)


def _date(parts: dict, reference: int) -> dt.date:
    year = parts["year"]
    if year is None:
        y = reference
    else:
        digits = year.lstrip("'")
        y = int(digits) if len(digits) == 4 else (2000 + int(digits) if int(digits) < 50 else 1900 + int(digits))
    return dt.date(y, parts["month"] or 1, parts["day"] or 1)


def _ordinal(day: int) -> str:
    return "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _spelled(original: str, month: int) -> str:
    """The new month spelt as the original was: full or short, case, a trailing period."""
    word = original.rstrip(".")
    name = MONTHS[month - 1] if len(word) > 3 and word.title() in MONTHS else SHORT[month - 1]
    if word.isupper():
        name = name.upper()
    elif word.islower():
        name = name.lower()
    return name + ("." if original.endswith(".") else "")


def _number(value: int, padded: bool) -> str:
    return f"{value:02d}" if padded else str(value)


def shift(text: str, days: int, reference_year: int = REFERENCE_YEAR) -> str:
    """`text` (one date as find() found it) moved by `days`, written in its own form; text that is no date is
    returned as it is. A day of the month alone ("the 14th") moves within a month of 31 days."""
    for form in FORMS:
        m = (_BARE.get(form.name) or form.pattern).fullmatch(text)
        parts = _parts(form, m) if m is not None else None
        if parts is None:
            continue
        if form.name == "on-the-day":
            parts = {**parts, "month": 1}
        moved = _date(parts, reference_year) + dt.timedelta(days=days)
        if form.name == "on-the-day":
            moved = dt.date(reference_year, 1, 1 + (moved - dt.date(reference_year, 1, 1)).days % 31)
        return _written(text, m, parts, moved)
    return text


def _written(text: str, m: re.Match, parts: dict, moved: dt.date) -> str:
    """The match's text with each part it has replaced by the moved date's."""
    pieces: list[tuple[int, int, str]] = []
    g = m.groupdict()
    numbers = [g[k] for k in ("month", "day") if g.get(k) and g[k].isdigit()]
    padded = any(len(v) == 2 and v.startswith("0") for v in numbers) or (len(numbers) == 2 and all(len(v) == 2 for v in numbers))
    if g.get("month") is not None:
        original = g["month"]
        pieces.append((m.start("month"), m.end("month"),
                       _number(moved.month, padded) if original[:1].isdigit() else _spelled(original, moved.month)))
    if g.get("day") is not None:
        pieces.append((m.start("day"), m.end("day"), _number(moved.day, padded)))
        if g.get("suffix"):
            suffix = _ordinal(moved.day)
            pieces.append((m.start("suffix"), m.end("suffix"), suffix.upper() if g["suffix"].isupper() else suffix))
    if g.get("year") is not None:
        original = g["year"]
        digits = original.lstrip("'")
        year = str(moved.year) if len(digits) == 4 else f"{moved.year % 100:02d}"
        pieces.append((m.start("year"), m.end("year"), ("'" if original.startswith("'") else "") + year))
    out = text
    for start, end, new in sorted(pieces, reverse=True):
        out = out[:start] + new + out[end:]
    return out

