"""The allowed range of every numeric setting medsft passes on, checked before anything loads or is written.

The libraries check some of these late (peft when it builds the adapter, torch when it builds the optimizer, numpy
when it seeds), after a run has started and written into output_dir; others they never check. Here each is one
line naming the key, the value and the range, and exit code 2.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from medsft.errors import UserError

SEED_END = 2**32  # numpy's seed, which transformers.set_seed also sets, takes 32 bits


def _at_least(low: float, what: str = "a number") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f"{what} of at least {low:g}"


def _above(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v > low), f"a number above {low:g}"


def _fraction(closed_top: bool = False) -> tuple[Callable[[Any], bool], str]:
    if closed_top:
        return (lambda v: 0 <= v <= 1), "a number from 0 to 1"
    return (lambda v: 0 <= v < 1), "a number from 0 up to (not including) 1"


_WHOLE = "a whole number"
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    # LoRA (TRL ModelConfig)
    # the contamination check (medsft)
    "contamination_ngram": _at_least(4, _WHOLE),
    "contamination_threshold": ((lambda v: 0 < v <= 1), "a number above 0, at most 1"),
    "lora_r": _at_least(1, _WHOLE),
    "lora_alpha": _above(0),
    "lora_dropout": _fraction(),
    # optimisation (SFTConfig)
    "learning_rate": _above(0),
    "weight_decay": _at_least(0),
    "max_grad_norm": _at_least(0),
    "adam_beta1": _fraction(),
    "adam_beta2": _fraction(),
    "adam_epsilon": _above(0),
    "label_smoothing_factor": _fraction(),
    "warmup_steps": ((lambda v: v >= 0), "0 or more (below 1: a fraction of all steps)"),
    # batches and length
    "per_device_train_batch_size": _at_least(1, _WHOLE),
    "per_device_eval_batch_size": _at_least(1, _WHOLE),
    "gradient_accumulation_steps": _at_least(1, _WHOLE),
    "eval_accumulation_steps": _at_least(1, _WHOLE),
    "max_length": _at_least(1, _WHOLE),
    "pad_to_multiple_of": _at_least(1, _WHOLE),
    "dataset_num_proc": _at_least(1, _WHOLE),
    "dataloader_num_workers": _at_least(0, _WHOLE),
    # how long, how often
    "num_train_epochs": _above(0),
    "max_steps": ((lambda v: v == -1 or v >= 1), "-1 (train num_train_epochs) or a whole number of at least 1"),
    "eval_steps": ((lambda v: v > 0), "above 0 (below 1: a fraction of all steps)"),
    "save_steps": ((lambda v: v > 0), "above 0 (below 1: a fraction of all steps)"),
    "logging_steps": ((lambda v: v > 0), "above 0 (below 1: a fraction of all steps)"),
    "save_total_limit": _at_least(1, _WHOLE),
    "seed": ((lambda v: 0 <= v < SEED_END), f"a whole number from 0 to {SEED_END - 1}"),
    "data_seed": ((lambda v: 0 <= v < SEED_END), f"a whole number from 0 to {SEED_END - 1}"),
    "ddp_timeout": _at_least(1, "a whole number of seconds"),
    # medsft's own
    "split_seed": ((lambda v: 0 <= v < SEED_END), f"a whole number from 0 to {SEED_END - 1}"),
    "sample_max_new_tokens": _at_least(1, _WHOLE),
    "max_eval_loss": _above(0),
}


def check(values: dict[str, Any]) -> None:
    """UserError for the first value outside its key's range (None means "not set" and passes)."""
    for key, (ok, allowed) in RANGES.items():
        value = values.get(key)
        if value is None or (key == "pad_to_multiple_of" and value == "auto"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise UserError(f"{key} must be {allowed}, got {value!r}")
