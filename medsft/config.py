"""Recipe parsing: a YAML file gives defaults, `--key value` overrides, keys are the libraries' own field names."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medsft import limits
from medsft.arguments import MedsftArguments
from medsft.errors import OneLineErrors, UserError
from medsft.textfiles import read_text


@dataclass
class Recipe:
    path: Path
    script: MedsftArguments
    training: Any  # trl.SFTConfig
    model: Any  # trl.ModelConfig
    explicit: list[str]  # keys set by the recipe, the command line or the hardware defaults
    given: list[str] = field(default_factory=list)  # keys set by the recipe or the command line
    cli: list[str] = field(default_factory=list)  # keys set on the command line
    hardware: list[str] = field(default_factory=list)  # keys set only by this machine's hardware defaults
    replaced: dict[str, Any] = field(default_factory=dict)  # keys the recipe set that this machine cannot run: as given

    def _values(self, keys: list[str]) -> dict[str, Any]:
        out = {}
        for key in keys:
            for obj in (self.script, self.training, self.model):
                if hasattr(obj, key):
                    out[key] = _plain(getattr(obj, key))
                    break
        return out

    def resolved(self) -> dict[str, Any]:
        """The recipe as it ran, re-runnable as a recipe: every key the user or medsft's defaults set, with its final
        value. The hardware defaults are left out: the machine that reads the run derives its own (a CPU run resumed
        on a GPU machine trains on the GPU); a key this machine replaced is kept as the recipe gave it."""
        return {**self._values([key for key in self.explicit if key not in self.hardware]), **self.replaced}

    def hardware_settings(self) -> dict[str, Any]:
        """What this machine's hardware defaults set (recorded apart, in hardware.yaml)."""
        return self._values(self.hardware)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(e.value) for e in hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        origin, getattr(origin, "__name__", str(origin))
    )


def _coerce(value: Any, hint: Any) -> Any:
    """Return `value` as the field type `hint` wants it, or raise TypeError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for member in args:
            try:
                return _coerce(value, member)
            except TypeError:
                pass
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is Literal:
        if value in args:
            return value
        raise TypeError
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value in {e.value for e in hint}:
            return value
        raise TypeError
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin is list or hint is list:
        inner = args[0] if args else Any
        if isinstance(value, list):
            return [_coerce(v, inner) for v in value]
        if isinstance(value, (dict, set, tuple)):
            raise TypeError
        return [_coerce(value, inner)]  # a scalar is a list of one (lora_target_modules: all-linear), never sliced
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    return value  # a type we do not know how to check: let the library decide


class RecipeParser:
    """TrlParser over (MedsftArguments, SFTConfig, ModelConfig) whose every failure is one UserError line."""

    def __init__(self):
        from trl import ModelConfig, SFTConfig, TrlParser

        class Parser(OneLineErrors, TrlParser):
            pass

        self.dataclasses = (MedsftArguments, SFTConfig, ModelConfig)
        self.parser = Parser(self.dataclasses, allow_abbrev=False, prog="medsft")
        self.hints = {}
        for dc in self.dataclasses:
            hints = typing.get_type_hints(dc)
            for f in dataclasses.fields(dc):
                if f.init:
                    self.hints.setdefault(f.name, hints[f.name])

    def suggest(self, key: str, prefix: str = "") -> str:
        close = difflib.get_close_matches(key, list(self.hints), n=1, cutoff=0.6)
        return f"; did you mean '{prefix}{close[0]}'?" if close else ""

    def check(self, source: str, config: dict[str, Any]) -> dict[str, Any]:
        checked = {}
        for key, value in config.items():
            if key not in self.hints:
                raise UserError(f"unknown key '{key}' in {source}{self.suggest(key)}")
            try:
                checked[key] = _coerce(value, self.hints[key])
            except TypeError:
                raise UserError(
                    f"key '{key}' in {source} must be {_type_name(self.hints[key])}, got {value!r}"
                ) from None
        return checked


# medsft tokenizes itself (the answer is never cut), so TRL's own inference of the loss mask from the columns
# never runs: completion-only and assistant-only loss are medsft's defaults. Non-padding token counts feed tokens/s.
# Batches are drawn at random: transformers' group_by_length sorts a window of rows by length, and where length
# tells the label (templated items: a "maybe" finding is the longest sentence) each step sees one label and the
# model learns the prior (quickstart: always "yes"). Grouping stays a recipe choice for free text.
# LoRA leaves no parameter unused, so DDP's search for them (transformers' default) is a wasted graph walk a step.
DEFAULTS = {
    "completion_only_loss": True,
    "assistant_only_loss": True,
    "include_num_input_tokens_seen": "non_padding",
    "train_sampling_strategy": "random",
    "ddp_find_unused_parameters": False,
}


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
    return {"use_cpu": True, "bf16": bool(bf16), "gradient_checkpointing": None, "activation_checkpointing": False}


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


def _notice(line: str | None) -> None:
    """A line for the user, once per process, from the first process only."""
    if line and line not in _SAID and os.environ.get("RANK", "0") == "0":
        _SAID.add(line)
        print(line, file=sys.stderr)


def _check_hardware(merged: dict[str, Any]) -> None:
    import torch
    from trl import SFTConfig

    from medsft import distributed

    fields = SFTConfig.__dataclass_fields__
    batch = {key: fields[key].default for key in ("per_device_train_batch_size", "gradient_accumulation_steps")}
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    distributed.check({**batch, **merged}, torch.cuda.is_available(), world_size)


def _check_report_to(report_to: Any) -> None:
    """transformers fails deep inside the trainer when a logger's package is missing; say it up front."""
    import importlib.util

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name, package, extra in (("mlflow", "mlflow", "."), ("tensorboard", "tensorboard", ".[tensorboard]")):
        if name in names and importlib.util.find_spec(package) is None:
            raise UserError(f"report_to: {name} needs the {package} package: pip install -e \"{extra}\"")


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    try:
        config = yaml.safe_load(read_text(path, "recipe"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"YAML syntax error in {path}{where}: {problem}") from None
    if config is None:
        raise UserError(f"recipe {path} is empty; it must be a YAML mapping such as 'model_name_or_path: ...'")
    if not isinstance(config, dict):
        raise UserError(f"recipe {path} must be a YAML mapping of key: value, not a {type(config).__name__}")
    return config


def _cli_keys(args: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0].replace("-", "_") for a in args if a.startswith("--")]


def settings(path: Path, config: dict[str, Any], cli: dict[str, Any], overrides: dict[str, Any] | None = None):
    """(every key's value, the hardware defaults, the given keys this machine replaced as given): medsft's defaults,
    then this machine's, then the recipe's overrides, the recipe and the command line, each above the one before;
    last what this machine cannot run replaced (bfloat16 on a GPU without it)."""
    given = {**(overrides or {}), **config, **cli}
    hardware = hardware_defaults(given)
    merged = {**DEFAULTS, **hardware, "output_dir": f"outputs/{path.stem}", **given}
    replaced, notice = half_precision(given)
    _notice(notice)
    return {**merged, **replaced}, {**hardware, **replaced}, {key: given[key] for key in replaced if key in given}


# Loading a model for inference needs none of the training machinery: its loggers, DeepSpeed, or the mixed precision
# of the GPU it trained on. These keys of a recipe are set aside (report_to: tensorboard must not need tensorboard
# installed to serve the run) and the checks of training-only settings do not run.
NOT_FOR_LOADING = ("report_to", "deepspeed", "fp16", "tf32")


def parse_recipe(argv: list[str], overrides: dict[str, Any] | None = None, loading: bool = False) -> Recipe:
    """`RECIPE.yaml [--key value ...]` (or `--config RECIPE.yaml`) -> Recipe. Raises UserError on bad input.
    `loading`: for a command that loads the recipe's model without training it (eval, generate, serve, merge)."""
    args = list(argv)
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise UserError("--config needs a recipe path")
        path = args.pop(i + 1)
        args.pop(i)
    elif args and not args[0].startswith("--"):
        path = args.pop(0)
    else:
        raise UserError("no recipe given; usage: python -m medsft RECIPE.yaml [--key value ...]")
    path = Path(path)
    parser = RecipeParser()
    config = parser.check(str(path), load_yaml(path))
    if loading:
        config = {key: value for key, value in config.items() if key not in NOT_FOR_LOADING}
    cli_keys = _cli_keys(args)
    for key in cli_keys:
        if key not in parser.hints:
            raise UserError(f"unknown option '--{key}'{parser.suggest(key, '--')}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        namespace, rest = parser.parser.parse_known_args(args)
        if rest:
            raise UserError(f"unexpected argument(s): {' '.join(rest)}")
        cli = {key: getattr(namespace, key) for key in cli_keys}
        merged, hardware, replaced = settings(path, config, cli, overrides)
        limits.check(merged)
        if merged.get("packing") and merged.get("max_length", 1) is None:
            raise UserError("packing needs max_length: rows are packed to that many tokens")
        if not loading:  # k-bit weights are checked where they load (loader): merge dequantizes them anywhere
            _check_hardware(merged)
            _check_report_to(merged.get("report_to"))
        try:
            # parse_dict builds the dataclasses from typed values; argparse would re-parse string defaults.
            script, training, model = parser.parser.parse_dict(merged)
        except UserError:
            raise
        except (ValueError, TypeError) as e:
            raise UserError(" ".join(str(e).split())) from None
    given = [*config, *cli]
    _check_data_keys({key: merged[key] for key in given})
    _check_intervals(given, merged)
    hardware_only = [key for key in hardware if key in replaced or (key not in given and key not in (overrides or {}))]
    return Recipe(path=path, script=script, training=training, model=model, explicit=list(merged), given=given, cli=list(cli),
                  hardware=hardware_only, replaced=replaced)


def parse_run(run: Path, argv: list[str]) -> Recipe:
    """A run folder's recipe.yaml plus command-line keys, to load the run's model (see `loading`). A folder can come
    from anyone: its trust_remote_code is not honoured unless this command line gives it too (one line says so)."""
    recipe = parse_recipe([str(run / "recipe.yaml"), *argv], loading=True)
    if recipe.training.trust_remote_code and "trust_remote_code" not in recipe.cli:
        recipe.training.trust_remote_code = False
        print(f"medsft: {run / 'recipe.yaml'} sets trust_remote_code, not honoured from a run folder; pass "
              "--trust_remote_code true to run the model's own code", file=sys.stderr)
    return recipe


# TRL data keys that have no meaning once medsft has tokenized the rows itself: refused rather than ignored.
REFUSED = {
    "dataset_kwargs": "medsft prepares the dataset itself (formatting, truncation, loss masks); remove it",
    "truncation_mode": "medsft never cuts the answer: it shortens the prompt from the left and splits long texts "
                       "into max_length pieces; remove it",
}


def _check_intervals(given: list[str], merged: dict[str, Any]) -> None:
    """An interval that its strategy would ignore (save_steps under save_strategy: epoch) is refused."""
    for key, strategy in (("save_steps", "save_strategy"), ("eval_steps", "eval_strategy"), ("logging_steps", "logging_strategy")):
        value = getattr(merged.get(strategy, "steps"), "value", merged.get(strategy, "steps"))
        if key in given and value != "steps":
            raise UserError(f"{key} takes effect only with {strategy}: steps, and this recipe has {strategy}: {value}; "
                            f"set {strategy}: steps too, or drop {key}")


def _check_data_keys(given: dict[str, Any]) -> None:
    for key, why in REFUSED.items():
        if key in given:
            raise UserError(f"{key}: {why}")
    if given.get("packing_strategy") == "wrapped":
        raise UserError("packing_strategy: wrapped lets a packed row attend across documents; use bfd "
                        "(medsft splits long texts into max_length pieces itself)")

