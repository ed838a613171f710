"""Each trainer's part of a recipe, looked up by the recipe's `trainer` as a task is by its `task`: its settings'
dataclass (TRL's config, imported only when a recipe names the trainer), medsft's defaults for it, the medsft keys
only it reads, how a choice task is scored after it, and whether `cv` can train it. What the trainer does (its data,
TRL's trainer, what its progress bar and summary show) is its module in medsft/training/ (sft.py, grpo.py); this
is what the recipe must know before anything loads. Adding a trainer: an entry here, its module, its tests."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrainerKeys:
    name: str
    about: str  # what it trains, for the `trainer` key's help
    config: str  # "module:Class" of its settings' dataclass (its keys are the recipe's)
    defaults: dict[str, Any] = field(default_factory=dict)  # medsft's defaults for its own keys
    reads: tuple[str, ...] = ()  # medsft keys that no other trainer reads (refused elsewhere)
    scoring: str = "likelihood"  # how a choice task is decided after it, unless the recipe says
    cross_validates: bool = False  # `medsft cv` trains each fold with it
    private: bool = False  # `dp` can train it: each row's loss its own (per-example clipping bounds it)

    def config_class(self) -> type:
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


TRAINERS = {keys.name: keys for keys in (
    TrainerKeys("sft", "TRL's SFTTrainer trains the answers", "trl:SFTConfig", cross_validates=True, private=True),
    TrainerKeys("grpo", "TRL's GRPOTrainer rewards generated answers checked against the key (choice tasks; "
                        "GRPOConfig's keys: num_generations, max_completion_length, beta, reward_weights, ...)",
                "medsft.recipe.grpo_keys:MedsftGRPOConfig",
                # rewards every step are logged, a few replies printed; the model generates after medsft's prompts
                defaults={"logging_steps": 1, "num_completions_to_print": 0, "log_completions": False},
                reads=("reward_funcs",), scoring="generate"),
    TrainerKeys("dpo", "TRL's DPOTrainer prefers each chosen answer to its rejected one against the model it starts "
                       "from (task: preference, or pairs built from a choice task; loss_type: sigmoid, ipo, ...)",
                "medsft.recipe.preference_keys:MedsftDPOConfig", reads=("pairs",)),
    TrainerKeys("kto", "TRL's KTOTrainer on answers labelled desirable or not (unpaired; a pair gives one of each)",
                "medsft.recipe.preference_keys:MedsftKTOConfig", reads=("pairs",)),
    TrainerKeys("orpo", "TRL's ORPOTrainer (trl.experimental): SFT on the chosen answer and an odds-ratio penalty on the "
                        "rejected one, no reference model", "medsft.recipe.preference_keys:MedsftORPOConfig",
                reads=("pairs",), defaults={"remove_unused_columns": False}),  # its collator reads every column
)}
NAMES = tuple(TRAINERS)
DEFAULT = NAMES[0]


def get(name: str) -> TrainerKeys:
    return TRAINERS[name]


def only_some() -> dict[str, list[str]]:
    """{medsft key: the trainers that read it} for the keys only some trainers read."""
    out: dict[str, list[str]] = {}
    for keys in TRAINERS.values():
        for key in keys.reads:
            out.setdefault(key, []).append(keys.name)
    return out
