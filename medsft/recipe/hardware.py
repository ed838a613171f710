"""What this machine needs that TRL's defaults get wrong for it: the CPU's settings, a GPU's frozen-base dtype, fp16
on a GPU without bfloat16 (the recipe's bf16 keys replaced, said in one line), accelerate's one thread a process
on a CPU with cores to spare, and the recipe's ddp_timeout on the process group whoever created it."""

from __future__ import annotations

import os
import sys
from typing import Any

import yaml


def hardware_defaults(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Settings this machine needs that TRL's defaults get wrong for it, given the user's keys (`config`)."""
    import torch

    config = config or {}
    peft = bool(config.get("use_peft"))
    if torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():  # pre-Ampere (T4, V100): TRL's bf16 default is refused there
            if _float32_wanted(config):
                return {"bf16": False}
            return {"bf16": False, "fp16": True} | ({"dtype": "float16"} if peft else {})
        # LoRA on a GPU: the frozen base in the compute dtype (2 bytes a frozen weight, as users expect); a full
        # fine-tune keeps float32 master weights.
        return {"dtype": "bfloat16"} if peft else {}
    bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    # TRL refuses to start on CPU without use_cpu, and its activation checkpointing makes a CPU step 2x slower.
    return {"use_cpu": True, "bf16": bool(bf16), "gradient_checkpointing": None, "activation_checkpointing": False,
            "ddp_timeout": CPU_TIMEOUT}


# Seconds a collective waits for the other processes on the CPU before the run fails (transformers' 1800 stays on a
# GPU). One rank waits for another only as long as their work differs: the longest seen in this project's 2-process
# CPU runs is a checkpoint or the run folder written by the main process, seconds; preparing the data, which the
# others wait for first, has its own patient wait (data/cache.py). A stuck run is seen in 10 minutes, not 30.
CPU_TIMEOUT = 600


def apply_timeout(seconds: int) -> None:
    """The recipe's ddp_timeout on the default process group. transformers passes it to the group it creates only
    on a GPU (its CPU path omits it), and a group created first by anything else keeps its own; set here, every
    command that parses a recipe waits this long, on gloo and NCCL alike."""
    from datetime import timedelta

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    from torch.distributed import distributed_c10d

    timeout = timedelta(seconds=seconds)
    private = getattr(distributed_c10d, "_set_pg_timeout", None)  # private: a torch release may rename it
    if private is not None:
        private(timeout)
    elif hasattr(dist.group.WORLD, "set_timeout"):  # the group's own setter (newer torch)
        dist.group.WORLD.set_timeout(timeout)
    else:
        notice(f"medsft: this torch cannot change the process group's timeout: ddp_timeout {seconds} not applied "
               "(the group keeps the timeout it was created with)")


def _float32_wanted(config: dict[str, Any]) -> bool:
    return config.get("fp16") is False or (config.get("bf16") is False and not config.get("fp16"))


def half_precision(config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """On a GPU without bfloat16: (the recipe's bfloat16 keys replaced, one line saying so). float16 mixed precision,
    or float32 where the recipe turns fp16 (or bf16) off; nothing on other machines."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.is_bf16_supported():
        return {}, None
    float32 = _float32_wanted(config)
    replaced: dict[str, Any] = {}
    if config.get("bf16"):
        replaced = {"bf16": False} if float32 else {"bf16": False, "fp16": True}
    if config.get("dtype") == "bfloat16":
        replaced["dtype"] = "float32" if float32 else "float16"
    given = ", ".join(f"{key}: {yaml.safe_dump(config[key]).splitlines()[0]}" for key in ("bf16", "dtype") if key in replaced)
    instead = f" instead of the recipe's {given}" if given else ""
    if float32:
        return replaced, (f"medsft: {torch.cuda.get_device_name()} has no bfloat16: training in float32{instead}"
                          if replaced else None)
    return replaced, (f"medsft: {torch.cuda.get_device_name()} has no bfloat16: training in float16 mixed precision "
                      f"(fp16: true){instead}; set fp16: false to train in float32")


_SAID: set[str] = set()


def notice(line: str | None) -> None:
    """A line for the user, once per process, from the first process only."""
    if line and line not in _SAID and os.environ.get("RANK", "0") == "0":
        _SAID.add(line)
        print(line, file=sys.stderr)


def idle_cores(num_processes: int) -> bool:
    """accelerate launch's default of one thread a process, on a CPU-only machine with cores to spare."""
    import torch

    launched = "ACCELERATE_MIXED_PRECISION" in os.environ
    spare = (os.cpu_count() or 1) // num_processes > 1
    return launched and not torch.cuda.is_available() and os.environ.get("OMP_NUM_THREADS") == "1" and spare
