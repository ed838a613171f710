"""Which checkpoint to resume from (the latest complete one, never a folder half-written when a run was killed), and
whether a run folder holds a finished run (run_state.json): a run stopped by a signal or killed is not one, and the
commands that load a run say so rather than take its folder for the trained model."""

from __future__ import annotations

import json
import re
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medsft.errors import UserError
from medsft.textfiles import read_text

WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
RECIPE_FILE = "recipe.yaml"  # the resolved recipe a run folder holds: what makes a folder a medsft run
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


def resolve(value: str | None, output_dir: str) -> str | None:
    """resume_from_checkpoint as a recipe gives it (None, "true"/"false", or a path) -> a checkpoint path or None."""
    if value is None or str(value).lower() == "false":
        return None
    if str(value).lower() == "true":
        found = latest(output_dir)
        if found is None:
            raise UserError(f"resume_from_checkpoint is true but {output_dir} holds no complete checkpoint-N folder; "
                            "drop the key to start afresh")
        return found
    path = Path(value)
    if not path.is_dir():
        raise UserError(f"resume_from_checkpoint: no checkpoint folder at {path}")
    why = problem(path)
    if why is not None:
        raise UserError(f"resume_from_checkpoint: {path} is incomplete ({why}); name an earlier checkpoint or use true")
    return str(path)


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
    why = unfinished(path) if (path / RECIPE_FILE).is_file() else None
    if why:
        raise UserError(why)


def run_folder(path: Path) -> Path | None:
    """The medsft run folder `path` names: itself (its recipe.yaml), or for one of its checkpoint-N folders, the run
    that holds it; None when neither."""
    if (path / RECIPE_FILE).is_file():
        return path
    if re.fullmatch(r"checkpoint-\d+", path.name) and (path.parent / RECIPE_FILE).is_file():
        return path.parent
    return None


def agreed(received: int | None) -> int | None:
    """The signal any rank received, on every rank: a signal often reaches one process only (a scheduler, a
    kill), and a rank that saves (collective) while another runs a forward pass hangs both. One small all-reduce a
    step; nothing under a single process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return received
    from accelerate import PartialState

    flag = torch.tensor([received or 0], device=PartialState().device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


class StopOnSignal(TrainerCallback):
    """SIGINT / SIGTERM: finish the step under way, save a checkpoint, stop; `stopped_by` tells the caller which
    signal stopped training (None when it ran to its end: a signal after the last step stops nothing). `install`
    takes the signals before the run folder is written: a signal that comes while the trainer starts stops it after
    its first step, rather than killing a run whose folder already says it is one."""

    def __init__(self):
        self.received: int | None = None
        self.stopped_by: int | None = None  # the same on every rank: decided by the all-reduce of a step's end
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.received = signum

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._previous:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_train_begin(self, args, state, control, **kwargs):
        self.install()

    def on_step_end(self, args, state, control, **kwargs):
        self.received = agreed(self.received)
        if self.received is not None:
            self.stopped_by = self.received
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
