"""Realistic replacements, consistent within a scope (a row, or every row of one patient): a name for a name (each
word of it: the same surname twice gets the same surrogate, an initial a letter, the case kept), a date moved by the
scope's one offset in whole weeks (intervals and weekdays kept), an age over 89 as "90+", a street address, city or
hospital made by Faker (the hospital keeps its kind: Clinic, Medical Center), and every number a number of the same
shape (digits for digits, letters for letters, separators kept). Seeded: the same input, scope and seed give the
same surrogates."""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from functools import cache

from medsft.deid import dates
from medsft.deid.names import given_names
from medsft.deid.recognizers import FACILITY

MAX_WEEKS = 52  # a date moves by 1 to 52 weeks, forward or back


@cache
def _faker():
    from faker import Faker

    return Faker("en_US")


def _draw(*key) -> random.Random:
    return random.Random(hashlib.sha256(":".join(map(str, key)).encode()).digest())


@dataclass
class Scope:
    """One row's (or one patient's) surrogates: each original's, and the offset every date moves by."""

    key: str
    seed: int
    chosen: dict = field(default_factory=dict)
    days: int = 0

    def __post_init__(self):
        rng = _draw(self.seed, self.key, "days")
        self.days = rng.choice([-1, 1]) * 7 * rng.randint(1, MAX_WEEKS)

    def once(self, category: str, original: str, make) -> str:
        """The surrogate of `original`, made on its first mention (by `make(rng)`), the same on every other."""
        key = (category, original)
        if key not in self.chosen:
            rng = _draw(self.seed, self.key, category, original)
            value = make(rng)
            for _ in range(5):  # never the original itself
                if value.lower() != original.lower():
                    break
                value = make(rng)
            self.chosen[key] = value
        return self.chosen[key]


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like.islower():
        return word.lower()
    return word[:1].upper() + word[1:]


def _fake(rng: random.Random, what: str) -> str:
    fake = _faker()
    fake.seed_instance(rng.getrandbits(64))
    return getattr(fake, what)()


def name(text: str, scope: Scope) -> str:
    """Each word of a name replaced alone (the same word the same way in the scope), initials by letters."""
    def word(m: re.Match) -> str:
        w = m.group()
        if len(w) == 1:
            return scope.once("INITIAL", w.upper(), lambda rng: rng.choice("ABCDEFGHJKLMNPRSTW"))
        kind = "first_name" if w.title() in given_names() else "last_name"
        return _cased(scope.once("NAME", w.lower(), lambda rng: _fake(rng, kind)), w)

    return re.sub(r"[A-Za-z]+(?:['’][A-Za-z]+)?", word, text)


def shaped(text: str, rng: random.Random) -> str:
    """A string of the same shape: each digit a digit, each letter a letter of its case, the rest kept."""
    out = []
    for ch in text:
        if ch.isdigit():
            out.append(str(rng.randint(0, 9)))
        elif ch.isalpha():
            letter = rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
            out.append(letter if ch.isupper() else letter.lower())
        else:
            out.append(ch)
    return "".join(out)


def _hospital(text: str, rng: random.Random) -> str:
    kind = re.search(rf"{FACILITY}$", text)
    return f"{_fake(rng, 'last_name')} {kind.group() if kind else 'Hospital'}"


def _address(text: str, rng: random.Random) -> str:
    if re.match(r"P\.?\s?O\.?\s+Box", text, re.IGNORECASE):
        return re.sub(r"\d+", lambda m: shaped(m.group(), rng), text)
    return _fake(rng, "street_address")


def _ip(text: str, rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4)) if "." in text else shaped(text, rng)


MADE = {  # category -> (the original, a seeded rng) -> its surrogate
    "ADDRESS": _address,
    "CITY": lambda text, rng: _fake(rng, "city"),
    "HOSPITAL": _hospital,
    "EMAIL": lambda text, rng: _fake(rng, "email"),
    "URL": lambda text, rng: _fake(rng, "url").rstrip("/") if text.lower().startswith("http") else "www." + _fake(rng, "domain_name"),
    "IP": _ip,
}


def surrogate(category: str, text: str, scope: Scope) -> str:
    """`text` (an identifier of `category`) as its scope replaces it."""
    if category == "NAME":
        return name(text, scope)
    if category == "DATE":
        return dates.shift(text, scope.days)
    if category == "AGE":
        return "90+"
    make = MADE.get(category, shaped)
    return scope.once(category, text, lambda rng: make(text, rng))
