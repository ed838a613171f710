"""Several models from one loaded base, as vLLM's `--lora-modules` serves them: a LoRA run answers by its own name
and as `base` (the adapter switched off), and more adapters of the same base load beside it by name
(`serve --adapter NAME=PATH`)."""

from __future__ import annotations

from pathlib import Path

from medsft.errors import UserError
from medsft.models import locate
from medsft.models.inference import Loaded
from medsft.runs import run_folder

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" (generation/decoder.py routes rows by it)
BASE_NAME = "base"


def parse(option: str) -> tuple[str, Path]:
    """`NAME=PATH` of --adapter: a name a request's `model` can give, and an adapter folder (or a LoRA run)."""
    name, sep, path = option.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise UserError(f"--adapter {option}: expected NAME=PATH (e.g. --adapter cardiology=outputs/cardio_lora)")
    folder = Path(path).expanduser()
    if not run_folder.holds_adapter(folder):
        raise UserError(f"--adapter {name}: {folder} holds no LoRA adapter ({run_folder.ADAPTER_CONFIG})")
    return name.strip(), folder


def _base_of(folder: Path) -> str:
    return locate.resolve(run_folder.adapter_base(folder))


def served(loaded: Loaded, name: str, extra: list[tuple[str, Path]]) -> dict[str, str | None]:
    """Each model name a request may give -> the adapter it runs (None: the model as loaded, first: the default).
    Loads the `extra` adapters into `loaded.model` (wrapping a plain base in peft); an adapter trained on another
    base, or a name given twice, is one UserError line."""
    run = getattr(loaded.model, "peft_config", None)
    models: dict[str, str | None] = {name: None}
    if run is not None:  # a run folder named "base" keeps its name; its base is then "base-model"
        models[BASE_NAME if name != BASE_NAME else f"{BASE_NAME}-model"] = BASE_ADAPTER
    if not extra:
        return models
    base = (run[loaded.model.active_adapter].base_model_name_or_path if run is not None else loaded.name)
    base = locate.resolve(base) if base else None
    for adapter, folder in extra:
        if adapter in models:
            raise UserError(f"--adapter {adapter}: the name is taken ({', '.join(models)} are served); choose another")
        trained_on = _base_of(folder)
        if base is not None and trained_on != base:
            raise UserError(f"--adapter {adapter}: {folder} was trained on {trained_on}, this server's base is {base}")
        _load(loaded, adapter, folder)
        models[adapter] = adapter
    if run is None:  # the plain model itself is the base under peft
        models[name] = BASE_ADAPTER
    return models


def _load(loaded: Loaded, adapter: str, folder: Path) -> None:
    from peft import PeftModel

    try:
        if hasattr(loaded.model, "peft_config"):
            loaded.model.load_adapter(str(folder), adapter_name=adapter)
        else:
            loaded.model = PeftModel.from_pretrained(loaded.model, str(folder), adapter_name=adapter)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"--adapter {adapter}: cannot load {folder}: {str(e).splitlines()[0]}") from None
    loaded.model.eval()


def mixed_batches(model) -> bool:
    """Whether rows of different adapters can share a forward pass (peft mixes LoRA adapters, not DoRA's)."""
    configs = getattr(model, "peft_config", {})
    return all(getattr(c, "peft_type", None) == "LORA" and not getattr(c, "use_dora", False) for c in configs.values())
