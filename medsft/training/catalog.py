"""The trainers by name (the recipe's `trainer`), as tasks are looked up by theirs: one module each."""

from __future__ import annotations

from medsft.training.dpo import DPO
from medsft.training.grpo import GRPO
from medsft.training.kto import KTO
from medsft.training.orpo import ORPO
from medsft.training.sft import SFT
from medsft.training.trainers import Trainer

TRAINERS: dict[str, Trainer] = {t.name: t for t in (SFT(), GRPO(), DPO(), KTO(), ORPO())}


def get(name: str) -> Trainer:
    return TRAINERS[name]
