"""Recipe parsing: a YAML file gives defaults, `--key value` overrides, keys are the libraries' own field names."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medsft.errors import OneLineErrors, UserError
from medsft.recipe import hardware, privacy_keys, ranges, refusals, trainer_keys
from medsft.recipe.coerce import coerce, type_name
from medsft.recipe.keys import MedsftArguments
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
                    out[key] = plain(getattr(obj, key))
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


def plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def trainer_configs() -> dict[str, type]:
    """The trainer settings' dataclass of each `trainer` (trainer_keys.py): TRL's SFTConfig, GRPOConfig, ..."""
    return {name: keys.config_class() for name, keys in trainer_keys.TRAINERS.items()}


def _fields(dc) -> dict[str, Any]:
    hints = typing.get_type_hints(dc)
    return {f.name: hints[f.name] for f in dataclasses.fields(dc) if f.init}


class RecipeParser:
    """TrlParser over (MedsftArguments, the trainer's config, ModelConfig) whose every failure is one UserError line.
    A key both medsft and the trainer's config name (GRPOConfig's chat_template_kwargs) is one option, read by both."""

    def __init__(self, trainer: str = trainer_keys.DEFAULT):
        from trl import ModelConfig, TrlParser

        class Parser(OneLineErrors, TrlParser):
            @staticmethod
            def _parse_dataclass_field(parser, field):
                if f"--{field.name}" not in parser._option_string_actions:
                    TrlParser._parse_dataclass_field(parser, field)

        configs = trainer_configs()
        self.trainer = trainer
        self.dataclasses = (MedsftArguments, configs[trainer], ModelConfig)
        self.parser = Parser(self.dataclasses, allow_abbrev=False, prog="medsft")
        self.hints = {}
        for dc in self.dataclasses:
            for name, hint in _fields(dc).items():
                self.hints.setdefault(name, hint)
        # the other trainers' own keys: named as theirs when given here
        self.elsewhere = {name: other for other, dc in configs.items() if other != trainer
                          for name in _fields(dc) if name not in self.hints}

    def suggest(self, key: str, prefix: str = "") -> str:
        close = difflib.get_close_matches(key, list(self.hints), n=1, cutoff=0.6)
        return f"; did you mean '{prefix}{close[0]}'?" if close else ""

    def unknown(self, key: str, where: str, prefix: str = "") -> UserError:
        if key in self.elsewhere:
            return UserError(f"key '{key}' {where} is for trainer: {self.elsewhere[key]}, and this recipe's trainer is "
                             f"{self.trainer}; remove it (or set trainer: {self.elsewhere[key]})")
        return UserError(f"unknown {'option' if prefix else 'key'} '{prefix}{key}'{'' if prefix else ' ' + where}"
                         f"{self.suggest(key, prefix)}")

    def check(self, source: str, config: dict[str, Any]) -> dict[str, Any]:
        checked = {}
        for key, value in config.items():
            if key not in self.hints:
                raise self.unknown(key, f"in {source}")
            try:
                checked[key] = coerce(value, self.hints[key])
            except TypeError:
                raise UserError(
                    f"key '{key}' in {source} must be {type_name(self.hints[key])}, got {value!r}"
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


def _trainer(config: dict[str, Any], args: list[str]) -> str:
    """The recipe's trainer (the command line's over the file's), which decides whose keys the recipe takes."""
    trainer = config.get("trainer", trainer_keys.DEFAULT)
    for i, arg in enumerate(args):
        if arg == "--trainer" and i + 1 < len(args):
            trainer = args[i + 1]
        elif arg.startswith("--trainer="):
            trainer = arg.split("=", 1)[1]
    if trainer not in trainer_keys.TRAINERS:
        raise UserError(f"trainer must be one of {', '.join(trainer_keys.NAMES)}, got {trainer!r}")
    return trainer


def _cli_keys(args: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0].replace("-", "_") for a in args if a.startswith("--")]


def settings(path: Path, config: dict[str, Any], cli: dict[str, Any], overrides: dict[str, Any] | None = None,
             parser: RecipeParser | None = None):
    """(every key's value, the hardware defaults, the given keys this machine replaced as given): medsft's defaults,
    then this machine's, then the recipe's overrides, the recipe and the command line, each above the one before;
    last what this machine cannot run replaced (bfloat16 on a GPU without it)."""
    given = {**(overrides or {}), **config, **cli}
    machine = hardware.hardware_defaults(given)
    defaults = DEFAULTS
    if parser is not None:  # medsft's defaults its trainer's settings take, then the trainer's own
        defaults = {**{k: v for k, v in DEFAULTS.items() if k in parser.hints}, **trainer_keys.get(parser.trainer).defaults}
    merged = {**defaults, **machine, "output_dir": f"outputs/{path.stem}", **given}
    replaced, notice = hardware.half_precision(given)
    hardware.notice(notice)
    return {**merged, **replaced}, {**machine, **replaced}, {key: given[key] for key in replaced if key in given}


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
    raw = load_yaml(path)
    parser = RecipeParser(_trainer(raw, args))
    config = parser.check(str(path), raw)
    if loading:
        config = {key: value for key, value in config.items() if key not in NOT_FOR_LOADING}
    cli_keys = _cli_keys(args)
    for key in cli_keys:
        if key not in parser.hints:
            raise parser.unknown(key, "on the command line", "--")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        namespace, rest = parser.parser.parse_known_args(args)
        if rest:
            raise UserError(f"unexpected argument(s): {' '.join(rest)}")
        cli = {key: getattr(namespace, key) for key in cli_keys}
        merged, machine, replaced = settings(path, config, cli, overrides, parser)
        ranges.check(merged)
        if merged.get("packing") and merged.get("max_length", 1) is None:
            raise UserError("packing needs max_length: rows are packed to that many tokens")
        if not loading:  # k-bit weights are checked where they load (loader): merge dequantizes them anywhere
            refusals.machine(merged)
            refusals.loggers(merged.get("report_to"))
        try:
            # parse_dict builds the dataclasses from typed values; argparse would re-parse string defaults.
            script, training, model = parser.parser.parse_dict(merged)
        except UserError:
            raise
        except (ValueError, TypeError) as e:
            raise UserError(" ".join(str(e).split())) from None
    hardware.apply_timeout(training.ddp_timeout)  # the process group exists once the config has set up devices
    given = [*config, *cli]
    refusals.data_keys({key: merged[key] for key in given})
    refusals.intervals(given, merged)
    privacy_keys.refused(merged, given, script)
    hardware_only = [key for key in machine if key in replaced or (key not in given and key not in (overrides or {}))]
    return Recipe(path=path, script=script, training=training, model=model, explicit=list(merged), given=given, cli=list(cli),
                  hardware=hardware_only, replaced=replaced)
