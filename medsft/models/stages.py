"""Stages: `model_name_or_path` may be a medsft run folder (an SFT run before DPO, GRPO or another SFT), with no
manual merge. A full run starts from its weights. A LoRA run starts from its adapter, continued: loaded trainable
on its own base, so the new run's adapter is still one adapter of that base, loaded like any LoRA run; a
preference trainer's reference is TRL's frozen copy of it, the start exactly. With `use_peft: false` the adapter is
folded into its base in memory and every weight trains (the reference a second folded copy). The new run records
its chain: the base, then each earlier run with its recipe's digest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.models import locate
from medsft.runs import run_folder, run_state

LORA_KEYS = {"lora_r": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"}


@dataclass
class Start:
    folder: Path  # the run a stage starts from
    adapter: bool  # a LoRA run (else whole weights)
    base: str  # what its adapter (or a new one on its weights) sits on: the chain's base, resolved
    chain: list[dict[str, Any]]  # the base, then each earlier run, this one last


def _run(name: str | None) -> Path | None:
    path = Path(str(name)).expanduser() if name else None
    return path if path is not None and path.is_dir() and run_folder.folder_of(path) == path else None


def base(name: str) -> str:
    """What a model_name_or_path's weights load from: a LoRA run's own base (down its chain), else itself resolved."""
    folder = _run(name)
    if folder is not None and run_folder.holds_adapter(folder):
        return base(run_folder.started_from(folder))
    return locate.resolve(name)


def root(name: str) -> str:
    """The model a chain of runs began with, resolved (a stage's base in its report)."""
    folder = _run(name)
    return root(run_folder.started_from(folder)) if folder is not None else locate.resolve(name)


def start(name: str | None) -> Start | None:
    """The run a stage starts from, or None when model_name_or_path is no medsft run folder."""
    folder = _run(name)
    if folder is None:
        return None
    run_state.require_finished(folder)
    if not (run_folder.holds_adapter(folder) or run_folder.holds_model(folder)):
        raise UserError(f"model_name_or_path {folder} is a medsft run without weights; name a finished run")
    earlier = run_folder.chain(folder) or [{"model": run_folder.started_from(folder)}]
    digest = hashlib.sha256((folder / run_folder.RECIPE_FILE).read_bytes()).hexdigest()
    step = {"run": str(folder.resolve()), "recipe_sha256": digest, "adapter": run_folder.holds_adapter(folder)}
    return Start(folder, step["adapter"], base(str(folder)), [*earlier, step])


def check_adapter_keys(recipe, begin: Start) -> None:
    """A continued adapter keeps its own settings: a LoRA key the recipe gives that differs is refused."""
    saved = run_folder.adapter_settings(begin.folder)
    for key, name in LORA_KEYS.items():
        if key in recipe.given and getattr(recipe.model, key) != saved.get(name):
            raise UserError(f"{key} {getattr(recipe.model, key)} differs from the adapter of {begin.folder} ({name} "
                            f"{saved.get(name)}), which this stage continues; remove {key}")


def adapter_on(base_model, recipe, begin: Start):
    """The model a stage from a LoRA run trains: the run's adapter on its base (`base_model`, loaded as the recipe
    loads it), trainable (use_peft), or folded in."""
    from peft import PeftModel

    check_adapter_keys(recipe, begin)
    model = PeftModel.from_pretrained(base_model, begin.folder, is_trainable=bool(recipe.model.use_peft))
    return model if recipe.model.use_peft else model.merge_and_unload()
