"""A recipe parsed once, for `preview`: a recipe it has read before is read back instead of parsed again, since
parsing imports TRL's and transformers' training classes (and with them torch and peft: ~5 s of a 7 s preview on 2
cores) to check the keys and fill the defaults, and a preview of prepared data needs only the values. The parse is
a function of the recipe file, the command line, the file it reads (a DeepSpeed config), medsft's recipe code, the
installed libraries and the machine: all of them key it, beside the prepared data (cache.py). A hit gives the same
keys and values, the library settings as plain records."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from functools import cache
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from medsft.data.cache import folder
from medsft.recipe.keys import MedsftArguments
from medsft.recipe.parser import Recipe, parse_recipe, plain

LIBRARIES = ("trl", "transformers", "accelerate", "peft", "torch", "deepspeed")
SECRETS = ("hub_token", "push_to_hub_token", "token")


@cache
def _code() -> str:
    """The source of what parses a recipe: medsft's recipe stage, its tasks, and this module."""
    import medsft

    root = Path(medsft.__file__).parent
    digest = hashlib.sha256()
    for path in sorted([*(root / "recipe").glob("*.py"), *(root / "tasks").glob("*.py"), Path(__file__)]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _file(value: Any) -> str | None:
    path = Path(str(value)).expanduser() if value else None
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else None


def _key(argv: list[str]) -> str | None:
    """Everything the parse of `argv` depends on, digested; None where there is no recipe file to key it by."""
    args = list(argv)
    path = args[args.index("--config") + 1] if "--config" in args[:-1] else args[0] if args and not args[0].startswith("--") else None
    if path is None or not Path(path).is_file():
        return None
    text = Path(path).read_bytes()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    deepspeed = args[args.index("--deepspeed") + 1] if "--deepspeed" in args[:-1] else (raw or {}).get("deepspeed") if isinstance(raw, dict) else None
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    machine = {"node": platform.node(), "env": {k: v for k, v in os.environ.items()
                                                if k.startswith(("ACCELERATE_", "CUDA_", "NVIDIA_", "HIP_", "WORLD_SIZE", "RANK"))}}
    whole = {"recipe": hashlib.sha256(text).hexdigest(), "path": str(Path(path).resolve()), "argv": args,
             "deepspeed": _file(deepspeed), "code": _code(), "versions": versions, "machine": machine}
    return hashlib.sha256(json.dumps(whole, sort_keys=True).encode()).hexdigest()[:24]


def _settings(config) -> dict[str, Any]:
    """A library config's fields as plain values, its hub credentials left out (nothing secret goes to the cache)."""
    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)
            if f.name not in SECRETS and hasattr(config, f.name)}


def _stored(recipe: Recipe) -> dict[str, Any]:
    return {"path": str(recipe.path), "script": dataclasses.asdict(recipe.script), "training": _settings(recipe.training),
            "model": _settings(recipe.model), "explicit": recipe.explicit, "given": recipe.given,
            "cli": recipe.cli, "hardware": recipe.hardware, "replaced": recipe.replaced}


def _recipe(stored: dict[str, Any]) -> Recipe:
    return Recipe(path=Path(stored["path"]), script=MedsftArguments(**stored["script"]),
                  training=SimpleNamespace(**stored["training"]), model=SimpleNamespace(**stored["model"]),
                  explicit=stored["explicit"], given=stored["given"], cli=stored["cli"], hardware=stored["hardware"],
                  replaced=stored["replaced"])


def parse(argv: list[str]) -> Recipe:
    """parse_recipe(argv), or its result read back when the same recipe was parsed before in the same setting."""
    root, key = folder(), None
    if root is not None:
        key = _key(argv)
    target = root / "recipes" / f"{key}.json" if key else None
    if target is not None and target.is_file():
        try:
            return _recipe(json.loads(target.read_text()))
        except (ValueError, TypeError, KeyError):  # written by another medsft: parse again
            pass
    recipe = parse_recipe(argv)
    if target is not None:
        try:
            text = json.dumps(_stored(recipe), default=str)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            partial.write_text(text)
            os.replace(partial, target)
        except (OSError, TypeError, ValueError):  # a read-only cache, or a value JSON cannot hold: parse next time
            pass
    return recipe
