"""A run folder: the resolved recipe that made it (recipe.yaml, what makes a folder a medsft run), what this machine's
defaults set (hardware.yaml), which runs it may be overwritten by, where an evaluation without a trained run writes,
and the time a run took."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import yaml

from medsft.errors import UserError
from medsft.runs import provenance, records, run_state
from medsft.recipe.parser import Recipe, parse_recipe

RECIPE_FILE = "recipe.yaml"
ADAPTER_CONFIG, MODEL_CONFIG = "adapter_config.json", "config.json"  # PEFT's and transformers' own
TOKENIZER_CONFIG = "tokenizer_config.json"
# What tracking logs with the run (MLflow artifacts), where the run wrote it.
ARTIFACTS = (records.EVAL_RESULTS, records.PREDICTIONS, records.LOSS_CURVES, records.CONFUSION_MATRIX, RECIPE_FILE,
             records.IDS_FILE)
HARDWARE_FILE = "hardware.yaml"  # what this machine's defaults set; a record, never read back
HARDWARE_NOTE = "# Set by medsft for the machine that trained this run; the machine that reads the run derives its own.\n"
EVAL_FILE = "evaluation.yaml"  # marks a folder holding an evaluation without training
# Keys that make two runs different runs; anything else (steps, logging, resume) may change between restarts.
IDENTITY = ("task", "dataset_name", "dataset_config", "data_files", "dataset_mixture", "model_name_or_path", "use_peft",
            "section", "prompt_style", "prompt_template", "completion_template", "chat")


def differs(recipe: Recipe, saved: Path) -> str | None:
    """The first identity key on which the run recorded in `saved` (a recipe.yaml) differs from this recipe."""
    previous = yaml.safe_load(saved.read_text()) or {}
    current = recipe.resolved()
    for key in IDENTITY:
        if previous.get(key) != current.get(key):
            return f"{key}: {previous.get(key)!r} there, {current.get(key)!r} now"
    return None


def check_output_dir(recipe: Recipe) -> None:
    """Refuse an output_dir that holds something other than this run, before anything is written."""
    out = Path(recipe.training.output_dir)
    if recipe.script.overwrite_output_dir or not out.is_dir() or not any(out.iterdir()):
        return
    saved = out / RECIPE_FILE
    if not saved.is_file():
        raise UserError(f"output_dir {out} is not empty and holds no medsft run; choose another output_dir or pass --overwrite_output_dir true")
    why = differs(recipe, saved)
    if why:
        raise UserError(f"output_dir {out} holds a different run ({why}); choose another output_dir or pass --overwrite_output_dir true")


def trained_run(recipe: Recipe, weights: Path | None = None) -> Path | None:
    """The folder holding the trained weights `eval` scores: `weights` (a checkpoint of the run, or the run folder,
    as the command line named it), else output_dir when it holds a run of this recipe's model and data; None when
    there is no such run. A run that did not finish (stopped by a signal, killed) is one UserError line naming the
    checkpoint to use instead."""
    out = Path(recipe.training.output_dir)
    if not (out / RECIPE_FILE).is_file() or differs(recipe, out / RECIPE_FILE) is not None:
        return None
    target = weights if weights is not None else out
    run_state.require_finished(target)
    if holds_adapter(target) or holds_model(target):
        return target
    if weights is not None and target.resolve() != out.resolve():
        raise UserError(f"{weights} holds no weights ({ADAPTER_CONFIG} or {MODEL_CONFIG}); name a complete checkpoint")
    return None


def holds_adapter(path: Path) -> bool:
    """A LoRA adapter's folder (a LoRA run, one of its checkpoints, or a bare adapter)."""
    return (path / ADAPTER_CONFIG).is_file()


def holds_model(path: Path) -> bool:
    """A whole model's folder (a full fine-tune, a merged or scratch model)."""
    return (path / MODEL_CONFIG).is_file()


def holds_tokenizer(path: Path) -> bool:
    """A folder with its own saved tokenizer (a run's: its chat template and EOS)."""
    return (path / TOKENIZER_CONFIG).is_file()


def adapter_base(path: Path) -> str:
    """The base model an adapter folder was trained on, as its adapter_config.json names it."""
    return json.loads((path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]


def adapter_settings(path: Path) -> dict:
    """An adapter folder's LoRA settings (adapter_config.json): r, lora_alpha, target_modules, ..."""
    return json.loads((path / ADAPTER_CONFIG).read_text())


def chain(folder: Path) -> list[dict]:
    """A stage's chain (the base, then each earlier run), each run found where it is now: by its path relative to
    this run's folder (the runs moved together, or read from another directory), else where it was trained."""
    out = []
    for entry in records.read_chain(folder) or []:
        if "run" in entry:
            beside = (folder / entry["relative"]).resolve() if "relative" in entry else None
            found = beside if beside is not None and (beside / RECIPE_FILE).is_file() else Path(entry["run"])
            entry = {**entry, "run": str(found)}
        out.append(entry)
    return out


def started_from(folder: Path) -> str | None:
    """What a run folder started from: for a stage, the run its chain ends with, found from this folder (chain());
    else the model_name_or_path its recipe names, without parsing it."""
    named = (yaml.safe_load((folder / RECIPE_FILE).read_text()) or {}).get("model_name_or_path")
    steps = chain(folder)
    if not steps or "run" not in steps[-1]:
        return named
    start = Path(steps[-1]["run"])
    if not (start / RECIPE_FILE).is_file():
        raise UserError(f"{folder} continues the run {named}, which is neither at {folder / steps[-1].get('relative', named)} "
                        f"nor at {start}, where it was trained; put the two runs' folders back side by side")
    return str(start)


def write_start(recipe: Recipe, splits: dict[str, dict[str, list[dict]]], steps: list[dict] | None = None,
                removed: dict[str, list[str]] | None = None, deidentified: dict[str, dict] | None = None,
                planted: tuple[dict, list] | None = None) -> None:
    """What makes output_dir this run before its first step: a run killed mid-way is still recognised as this run
    (its recipe, hardware settings, split ids, environment, and for a stage the chain of runs it starts from), and as
    unfinished (its state); with decontaminate, the training rows it removed; with deidentify, what it replaced; with
    canaries, the secrets it inserted."""
    out = Path(recipe.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if steps:  # each earlier run also by its path from this one: found again after outputs/ moves (chain())
        records.write_chain(str(out), [{**e, "relative": os.path.relpath(e["run"], out.resolve())} if "run" in e else e
                                       for e in steps])
    if removed is not None:
        records.write_decontaminated(str(out), removed)
    if deidentified:
        records.write_deidentified(str(out), deidentified)
    if planted:
        records.write_canaries(str(out), *planted)
    (out / RECIPE_FILE).write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    (out / HARDWARE_FILE).write_text(HARDWARE_NOTE + yaml.safe_dump(recipe.hardware_settings(), sort_keys=False))
    records.write_ids(str(out), splits)
    provenance.write(str(out), provenance.record(recipe))
    run_state.mark(str(out), "training")


def write_evaluation_start(recipe: Recipe, out: Path, splits: dict[str, dict[str, list[dict]]]) -> None:
    """An evaluation without a trained run: its folder marked as one (evaluation.yaml), with the ids it scores."""
    out.mkdir(parents=True, exist_ok=True)
    (out / EVAL_FILE).write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    records.write_ids(str(out), splits)


def eval_dir(recipe: Recipe) -> Path:
    """Where an evaluation without a trained run writes: the output_dir the command line names (new, empty or an
    earlier evaluation), else outputs/eval/<run>-<model>; a training output_dir is never touched."""
    out = Path(recipe.training.output_dir)
    if "output_dir" in recipe.cli and not (out / RECIPE_FILE).is_file():  # not a run folder: this evaluation's own
        return evaluation_folder(out)
    model = str(recipe.model.model_name_or_path).rstrip("/").split("/")[-1]
    return out.parent / "eval" / f"{out.name}-{model}"


def evaluation_folder(out: Path) -> Path:
    """A folder an evaluation may write into: new, empty or an earlier evaluation; anything else is refused."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EVAL_FILE).is_file())):
        raise UserError(f"output_dir {out} holds something other than a medsft evaluation; name a new or empty folder")
    return out


def saved_run_time(output_dir: str) -> tuple[int | None, float | None]:
    """(steps, training seconds) of the run saved in output_dir, from its trainer_state.json; Nones without one."""
    state_file = Path(output_dir) / records.TRAINER_STATE
    if not state_file.is_file():
        return None, None
    state = json.loads(state_file.read_text())
    runtimes = [h["train_runtime"] for h in state.get("log_history", []) if "train_runtime" in h]
    return state.get("global_step"), (runtimes[-1] if runtimes else None)


def folder_of(path: Path) -> Path | None:
    """The medsft run folder `path` names: itself (its recipe.yaml), or for one of its checkpoint-N folders, the run
    that holds it; None when neither."""
    if (path / RECIPE_FILE).is_file():
        return path
    if re.fullmatch(r"checkpoint-\d+", path.name) and (path.parent / RECIPE_FILE).is_file():
        return path.parent
    return None


def audited(folder: Path):
    """What an audit of a run reads: its recipe, its datasets by the ids it recorded, the canaries it inserted and
    their secrets' length in digits."""
    from medsft.data import canaries
    from medsft.data.datasets import load
    from medsft.recipe import mixture

    recipe = parse_run(folder, [])
    datasets = load(mixture.specs(recipe.script, recipe.training), records.read_ids(str(folder)))
    planted = records.read_canaries(folder) or {"settings": {"digits": 0}, "canaries": []}
    made = [canaries.Canary(c["secret"], c["repeats"], c["text"]) for c in planted["canaries"]]
    return recipe, datasets, made, planted["settings"]["digits"]


def parse_run(run: Path, argv: list[str]) -> Recipe:
    """A run folder's recipe.yaml plus command-line keys, to load the run's model (see `loading`). A folder can come
    from anyone: its trust_remote_code is not honoured unless this command line gives it too (one line says so)."""
    recipe = parse_recipe([str(run / RECIPE_FILE), *argv], loading=True)
    named = recipe.model.model_name_or_path
    start = started_from(run) if "model_name_or_path" not in recipe.cli else named
    if start != named:  # a stage's start as its chain finds it; the recipe as it ran keeps the path it named
        recipe.model.model_name_or_path, recipe.replaced["model_name_or_path"] = start, named
    if recipe.training.trust_remote_code and "trust_remote_code" not in recipe.cli:
        recipe.training.trust_remote_code = False
        print(f"medsft: {run / RECIPE_FILE} sets trust_remote_code, not honoured from a run folder; pass "
              "--trust_remote_code true to run the model's own code", file=sys.stderr)
    return recipe


# TRL data keys that have no meaning once medsft has tokenized the rows itself: refused rather than ignored.
