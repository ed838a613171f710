"""What a run needs to be reproduced: package versions, the device, the seed and a hash of the resolved recipe,
written beside the run (environment.json) and into eval_results.json; `eval RUN` warns when versions changed."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

PACKAGES = ("medsft", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "deepspeed")
FILE = "environment.json"


def versions() -> dict[str, str | None]:
    out = {}
    for package in PACKAGES:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def device(use_cpu: bool) -> str:
    import torch

    if torch.cuda.is_available() and not use_cpu:
        return f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return "cpu"


def record(recipe) -> dict[str, Any]:
    resolved = yaml.safe_dump(recipe.resolved(), sort_keys=True)
    return {"versions": versions(), "device": device(bool(recipe.training.use_cpu)), "seed": recipe.training.seed,
            "recipe_sha256": hashlib.sha256(resolved.encode()).hexdigest()}


def write(output_dir: str, environment: dict[str, Any]) -> None:
    (Path(output_dir) / FILE).write_text(json.dumps(environment, indent=2))


def read(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / FILE
    return json.loads(path.read_text()) if path.is_file() else None


def mismatch(recorded: dict[str, Any] | None) -> str | None:
    """One line naming the packages whose installed version differs from the run's, or None."""
    if not recorded:
        return None
    now = versions()
    changed = [f"{p} {recorded['versions'].get(p)} -> {now.get(p)}" for p in PACKAGES
               if p != "medsft" and recorded.get("versions", {}).get(p) != now.get(p)]
    if not changed:
        return None
    return "this run was trained with other package versions (" + ", ".join(changed) + "): numbers may differ slightly"
