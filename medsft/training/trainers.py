"""What a trainer is: one module each (sft.py, grpo.py, dpo.py, kto.py, orpo.py; looked up by the recipe's `trainer`
in catalog.py, its recipe keys in recipe/trainer_keys.py), with the same small interface, so that nothing else
branches on a trainer's name: how it prepares its data from the run's datasets, how it builds TRL's trainer, and
what its data summary, preview, progress bar and training summary show (computed here, drawn by the console)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What the data became, split by split: (split, [(phrase, whether it is a warning)]).
DataLines = list[tuple[str, list[tuple[str, bool]]]]


@dataclass
class Prepared:
    """The run's model (a path for from_pretrained, or a model object: scratch), tokenizer and datasets by role, and
    the trainer's data as its TRL trainer takes it; `stats`: what the rows became, where the trainer tokenized them."""

    model: Any
    tokenizer: Any
    datasets: list
    train_dataset: Any = None  # a datasets.Dataset
    eval_dataset: Any = None
    stats: dict[str, Any] = field(default_factory=dict)
    start: Any = None  # models/stages.Start: the run this stage starts from (its model is loaded when training builds)
    removed: dict[str, list[str]] | None = None  # decontaminate: the training rows removed, by dataset
    canaries: list | None = None  # canaries: the secrets inserted (data/canaries.py), a dataset of their own


@dataclass
class Preview:
    """`medsft preview`: panels of token texts (the trained ones marked; None: a prompt, nothing trained) and the
    numbers under them."""

    title: str
    panels: list[tuple[str, list[str], list[int] | None]]
    rows: list[tuple[str, str]]


class Trainer:
    name: str

    def prepare(self, recipe, base: Prepared) -> Prepared:
        """The trainer's data from the run's datasets (base: model, tokenizer and datasets loaded); writes nothing."""
        raise NotImplementedError

    def build(self, recipe, prepared: Prepared, args, callbacks) -> Any:
        """TRL's trainer for the prepared data, with the run's settings `args`."""
        raise NotImplementedError

    def data_lines(self, prepared: Prepared, args) -> DataLines:
        raise NotImplementedError

    def preview(self, prepared: Prepared, args, n: int) -> Preview:
        raise NotImplementedError

    def progress(self, logs: dict) -> str | None:
        """The progress bar's figure after a log (None: the log moves nothing)."""
        return f"loss {logs['loss']:.4f}" if "loss" in logs else None

    def summary(self, log_history: list[dict]) -> list[tuple[str, str]]:
        """Rows the training summary adds to the steps, time and losses every trainer shows."""
        return []


def peft_config(recipe, model):
    """The recipe's LoRA settings for a new adapter; None where the model already carries the adapter it trains (a
    stage continuing a LoRA run)."""
    from trl import get_peft_config

    return None if hasattr(model, "peft_config") else get_peft_config(recipe.model)


def quantization_config(recipe, model):
    """QLoRA's 4/8-bit settings for TRL to load `model` with; None where the model is built already (a stage from a
    LoRA run: medsft's loader quantized its base, and TRL refuses to be told again)."""
    from trl import get_quantization_config

    return get_quantization_config(recipe.model) if isinstance(model, str) else None


def steps_per_epoch(rows: int, args) -> int:
    return -(-rows // (args.per_device_train_batch_size * args.gradient_accumulation_steps))
