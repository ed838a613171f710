"""How far a run got: run_state.json in its folder ("training" before the first step, what a killed run keeps;
"stopped" after a signal, with the checkpoint it saved; "complete" once its final weights are written), and which
of its checkpoint-N folders are complete. The commands that load a run say when it did not finish rather than take
its folder for the trained model."""

from __future__ import annotations

import json
import re
import signal
import warnings
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.textfiles import read_text

WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
STATE_FILE = "run_state.json"  # {"state": training | stopped | complete, "step", "signal", "checkpoint"}


def problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete. transformers writes
    trainer_state.json last, after the weights, optimizer, scheduler and RNG states."""
    if not any((folder / name).is_file() for name in WEIGHTS):
        return "no weights"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text())["global_step"]
    except (ValueError, KeyError):
        return "trainer_state.json is incomplete"
    return None


def latest(output_dir: str) -> str | None:
    """The highest-step complete checkpoint-N in output_dir; incomplete ones are skipped with a warning."""
    found = []
    for folder in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
        if match and folder.is_dir():
            found.append((int(match.group(1)), folder))
    for _, folder in sorted(found, reverse=True):
        why = problem(folder)
        if why is None:
            return str(folder)
        warnings.warn(f"skipping {folder}: {why} (a run stopped while writing it)", stacklevel=2)
    return None


def mark(output_dir: str, state: str, step: int | None = None, signum: int | None = None) -> None:
    """Record how far the run in output_dir got: "training" before the first step (what a killed run keeps),
    "stopped" after a signal (with the checkpoint it saved), "complete" once its final weights are written."""
    record: dict[str, Any] = {"state": state, "step": step}
    if signum is not None:
        record["signal"] = signal.Signals(signum).name
        record["checkpoint"] = Path(latest(output_dir) or "").name or None
    (Path(output_dir) / STATE_FILE).write_text(json.dumps(record))


def unfinished(run: Path) -> str | None:
    """One line saying why `run` holds no finished run (and what to load instead), or None. A folder without a
    state file (written before medsft recorded one) is taken as finished when it holds weights."""
    path = run / STATE_FILE
    if not path.is_file():
        return None
    record = json.loads(read_text(path, "run state"))
    if record.get("state") == "complete":
        return None
    found = latest(str(run))
    use = (f"evaluate, serve or merge its checkpoint ({found}) or resume it with --resume_from_checkpoint true"
           if found else "it saved no checkpoint: train it again")
    if record.get("state") == "stopped":
        return f"{run} holds a run stopped by {record.get('signal')} at step {record.get('step')}, not a finished one; {use}"
    return f"{run} holds a run that did not finish (killed, or still training); {use}"


def require_finished(path: Path) -> None:
    """UserError when `path` is a run folder whose run did not finish (a checkpoint of it loads as it is)."""
    why = unfinished(path)
    if why:
        raise UserError(why)
