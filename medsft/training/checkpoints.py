"""Which checkpoint to resume from (the latest complete one, never a folder half-written when a run was killed), and
SIGINT / SIGTERM agreed across ranks: the step under way finished, a checkpoint saved, training stopped."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medsft.errors import UserError
from medsft.runs.run_state import latest, problem


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
    from accelerate import PartialState

    from medsft.models.sharding import largest

    return largest(received or 0, PartialState().device) or None


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
        if self.stopped_by is not None:
            # The process is on its way out with 128 + the signal (its checkpoint saved): under torchrun the first
            # rank out makes the agent SIGTERM the others, which must still write their state and exit with the same
            # code, not die by it. Ignored, not handled: Python resets its handlers to the default while it exits,
            # and leaves an ignored signal ignored.
            for sig in self._previous:
                signal.signal(sig, signal.SIG_IGN)
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
