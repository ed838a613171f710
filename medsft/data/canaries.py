"""Canaries (The Secret Sharer, Carlini et al. 2019): random secrets in a documented format, inserted into a run's
training rows a given number of times each, so that an audit can measure how far the trained model ranks each
secret above the others of its format (its exposure). They are medsft's own rows: a dataset of their own (task text:
every token trained), seeded, recorded in the run (canaries.json), never written into a user's data.

    canaries: {count: 2, repeats: [1, 4, 16], format: "The patient's medical record number is {secret}."}

`{secret}` is 7 random digits; `{secret:N}` N digits (the format's candidates: 10^N); recipe/privacy_keys.py checks
the setting."""

from __future__ import annotations

import random
from dataclasses import dataclass

from medsft.recipe.privacy_keys import SECRET

NAME = "canaries"  # the dataset's name in the run (split_ids.json, the data lines)


@dataclass(frozen=True)
class Canary:
    secret: str
    repeats: int
    text: str  # the sentence as inserted

    def candidate(self, secret: str) -> str:
        return self.text.replace(self.secret, secret, 1)


def made(config: dict, seed: int) -> list[Canary]:
    """`count` canaries per repeat count, their secrets drawn under `seed` (distinct)."""
    rng, out, seen = random.Random(f"canaries:{seed}"), [], set()
    for repeats in config["repeats"]:
        for _ in range(config["count"]):
            secret = "".join(rng.choice("0123456789") for _ in range(config["digits"]))
            while secret in seen:
                secret = "".join(rng.choice("0123456789") for _ in range(config["digits"]))
            seen.add(secret)
            out.append(Canary(secret, repeats, SECRET.sub(secret, config["format"], count=1)))
    return out


def candidates(canary: Canary, digits: int, n: int, seed: int) -> list[str]:
    """n random secrets of the canary's format other than its own (the reference it is ranked among)."""
    rng = random.Random(f"candidates:{seed}:{canary.secret}")
    out = []
    while len(out) < n:
        secret = "".join(rng.choice("0123456789") for _ in range(digits))
        if secret != canary.secret:
            out.append(secret)
    return out


def rows(planted: list[Canary]) -> list[dict]:
    """The training rows: each canary's sentence as many times as its repeat count (task text's rows)."""
    return [{"id": f"canary-{i}-{k}", "text": c.text} for i, c in enumerate(planted) for k in range(c.repeats)]


def dataset(planted: list[Canary]):
    """The canaries as a dataset of the run: task text (every token trained), training rows only."""
    import hashlib

    from medsft.data.datasets import Dataset
    from medsft.recipe.keys import DataSpec
    from medsft.tasks import get

    spec = DataSpec(task="text", dataset_name=NAME, name=NAME)
    key = hashlib.sha256("\n".join(f"{c.repeats}:{c.text}" for c in planted).encode()).hexdigest()[:24]
    return Dataset(spec, get(spec), {"train": rows(planted), "eval": [], "test": []}, f"canaries-{key}")
