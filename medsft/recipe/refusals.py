"""Settings that cannot work, refused before anything loads or is written: CUDA-only keys on a machine without CUDA,
DeepSpeed batch sizes that contradict the recipe, a logger whose package is missing, TRL data keys that medsft's own
tokenization makes meaningless, and an interval its strategy would ignore."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.textfiles import read_json

CUDA_ONLY = {
    "load_in_4bit": "bitsandbytes 4-bit loading (QLoRA)",
    "load_in_8bit": "bitsandbytes 8-bit loading",
    "fp16": "fp16 mixed precision",
    "tf32": "TF32 matmuls",
    "use_vllm": "vLLM generation (GRPO)",
}


def deepspeed_config(settings: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(where it came from, the DeepSpeed config): the recipe's `deepspeed` key (a JSON path or a mapping), else the
    accelerate config this process was launched with; None when DeepSpeed is not in use."""
    value = settings.get("deepspeed")
    if value is None:
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
            return None
        value = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        if not value:  # a config written with `accelerate config` inline: only the stage is known
            stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)
            return "the accelerate config", {"zero_optimization": {"stage": stage}}
    if isinstance(value, dict):
        return "the recipe's deepspeed mapping", value
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"deepspeed config not found: {path} (relative paths start from the directory you run in; "
                        "run from the repository root or give an absolute path)")
    return str(path), read_json(path, "deepspeed config", dict)


def check(settings: dict[str, Any], cuda: bool, world_size: int) -> None:
    """Raise UserError, naming the keys, for a combination that would fail later (or silently do the wrong thing)."""
    if not cuda:
        for key, what in CUDA_ONLY.items():
            if settings.get(key):
                hint = "; bf16 works on CPU" if key == "fp16" else ""
                raise UserError(f"{key}: {what} needs a CUDA GPU and this machine has none; remove {key} from the recipe{hint}")
    if settings.get("use_vllm"):
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError("use_vllm: vLLM is not installed; pip install vllm (a CUDA machine), or remove use_vllm to "
                            "generate with transformers")
    if settings.get("device_map") and world_size > 1:
        raise UserError(f"device_map: {settings['device_map']} splits one model across this machine's GPUs in one process, and "
                        f"this run has {world_size} processes, each holding its own copy; use DeepSpeed ZeRO-3 or FSDP "
                        "(./launch.sh zero3|fsdp2 RECIPE) to shard it, or run one process")
    found = deepspeed_config(settings)
    if found is None:
        return
    where, config = found
    stage = (config.get("zero_optimization") or {}).get("stage", 0)
    if settings.get("load_in_4bit") and stage == 3:
        raise UserError(f"load_in_4bit cannot be combined with DeepSpeed ZeRO-3 ({where}): ZeRO-3 partitions the weights "
                        "that bitsandbytes quantized; use zero2 for QLoRA, or drop load_in_4bit")
    micro = settings.get("per_device_train_batch_size", 8)
    accumulation = settings.get("gradient_accumulation_steps", 1)
    wanted = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world_size,
    }
    for key, want in wanted.items():
        got = config.get(key, "auto")
        if got != "auto" and got != want:
            raise UserError(
                f"{where} sets {key} to {got} but the recipe means {want} (per_device_train_batch_size {micro} x "
                f"gradient_accumulation_steps {accumulation} x {world_size} processes); set it to \"auto\" in the JSON"
            )


def machine(merged: dict[str, Any]) -> None:
    """What this machine and launcher cannot run (CUDA-only keys, DeepSpeed batch sizes), with TRL's batch defaults."""
    import torch
    from trl import SFTConfig

    fields = SFTConfig.__dataclass_fields__
    batch = {key: fields[key].default for key in ("per_device_train_batch_size", "gradient_accumulation_steps")}
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    check({**batch, **merged}, torch.cuda.is_available(), world_size)


def loggers(report_to: Any) -> None:
    """transformers fails deep inside the trainer when a logger's package is missing; say it up front."""
    import importlib.util

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name, package, extra in (("mlflow", "mlflow", "."), ("tensorboard", "tensorboard", ".[tensorboard]")):
        if name in names and importlib.util.find_spec(package) is None:
            raise UserError(f"report_to: {name} needs the {package} package: pip install -e \"{extra}\"")


# TRL data keys that have no meaning once medsft has tokenized the rows itself: refused rather than ignored.
REFUSED = {
    "dataset_kwargs": "medsft prepares the dataset itself (formatting, truncation, loss masks); remove it",
    "truncation_mode": "medsft never cuts the answer: it shortens the prompt from the left and splits long texts "
                       "into max_length pieces; remove it",
}


def intervals(given: list[str], merged: dict[str, Any]) -> None:
    """An interval that its strategy would ignore (save_steps under save_strategy: epoch) is refused."""
    for key, strategy in (("save_steps", "save_strategy"), ("eval_steps", "eval_strategy"), ("logging_steps", "logging_strategy")):
        value = getattr(merged.get(strategy, "steps"), "value", merged.get(strategy, "steps"))
        if key in given and value != "steps":
            raise UserError(f"{key} takes effect only with {strategy}: steps, and this recipe has {strategy}: {value}; "
                            f"set {strategy}: steps too, or drop {key}")


def data_keys(given: dict[str, Any]) -> None:
    for key, why in REFUSED.items():
        if key in given:
            raise UserError(f"{key}: {why}")
    if given.get("packing_strategy") == "wrapped":
        raise UserError("packing_strategy: wrapped lets a packed row attend across documents; use bfd "
                        "(medsft splits long texts into max_length pieces itself)")
