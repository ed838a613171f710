"""Which checkpoint to resume from: the latest complete one, never a folder half-written when a run was killed."""

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

WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


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
    """SIGINT / SIGTERM: finish the step under way, save a checkpoint, stop; `received` tells the caller which."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.received = signum

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        self.received = agreed(self.received)
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
