"""How far a run got: run_state.json in its folder ("training" before the first step, what a killed run keeps;
"stopped" after a signal, with the checkpoint it saved; "complete" once its final weights are written; "failed" when
a process got no answer from another within ddp_timeout), and which of its checkpoint-N folders are complete. The commands that load a run say when it did not finish rather than take
its folder for the trained model."""

from __future__ import annotations

import json
import os
import re
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from medsft.errors import ProcessLost, UserError
from medsft.runs.records import TRAINER_STATE
from medsft.textfiles import read_text

WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
STATE_FILE = "run_state.json"  # {"state": training | stopped | complete | failed, "step", "signal", "checkpoint", ...}


def problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete. transformers writes
    trainer_state.json last, after the weights, optimizer, scheduler and RNG states."""
    if not any((folder / name).is_file() for name in WEIGHTS):
        return "no weights"
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE}"
    try:
        json.loads(state.read_text())["global_step"]
    except (ValueError, KeyError):
        return f"{TRAINER_STATE} is incomplete"
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


def mark(output_dir: str, state: str, step: int | None = None, signum: int | None = None, **details: Any) -> None:
    """Record how far the run in output_dir got: "training" before the first step (what a killed run keeps),
    "stopped" after a signal (with the checkpoint it saved), "complete" once its final weights are written, "failed"
    (with `details`: the phase, whether its weights were complete, why). Written whole or not at all: the process
    that records a failure may not be the main one, and both may."""
    record: dict[str, Any] = {"state": state, "step": step}
    if signum is not None:
        record["signal"] = signal.Signals(signum).name
        record["checkpoint"] = Path(latest(output_dir) or "").name or None
    record.update(details)
    path = Path(output_dir) / STATE_FILE
    partial = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    partial.write_text(json.dumps(record))
    os.replace(partial, path)


def lost_process(error: BaseException) -> str | None:
    """Why a collective failed, when `error` is one ("timeout": no answer within the process group's timeout;
    "lost": the other process ended), else None. NCCL raises a DistError; gloo a RuntimeError, naming itself, or
    through a pending handle (DeepSpeed's ZeRO-3 gathers) with its transport's words alone ("Application timeout
    caused pair closure", "Connection closed by peer")."""
    import torch.distributed as dist

    text = str(error)
    gloo = ("gloo", "NCCL", "pair closure", "Connection closed by peer", "Connection reset by peer")
    if not (isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and any(g in text for g in gloo))):
        return None
    return "timeout" if "timed out" in text.lower() or "timeout" in text.lower() else "lost"


@contextmanager
def failing_when_lost(output_dir: str | None, step: Callable[[], int | None], phase: str, timeout: float,
                      trained: bool = False):
    """A collective that got no answer from another process (lost_process) ends the command: run_state.json says
    the run failed (where `output_dir` is a run being trained; `trained`: its final weights were written), and
    ProcessLost carries the one line naming this rank, the step and what to do."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - only a collective's failure is taken; everything else goes on up
        why = lost_process(e)
        if why is None:
            raise
        import torch.distributed as dist

        rank, at = dist.get_rank() if dist.is_initialized() else 0, step()
        if output_dir is not None and Path(output_dir).is_dir():
            mark(output_dir, "failed", at, phase=phase, trained=trained, reason=why)
        where = f"rank {rank} at step {at}" if at is not None else f"rank {rank}"
        said = (f"no answer from another process within ddp_timeout ({timeout:g} s): one is stuck or stopped"
                if why == "timeout" else "another process ended while this one waited for it")
        raise ProcessLost(f"{where} ({phase}): {said}; the run failed"
                          f"{f' ({STATE_FILE})' if output_dir is not None else ''}. If a process was only slow, "
                          "raise --ddp_timeout") from None


def unfinished(run: Path) -> str | None:
    """One line saying why `run` holds no finished run (and what to load instead), or None. A folder without a
    state file (written before medsft recorded one) is taken as finished when it holds weights."""
    path = run / STATE_FILE
    if not path.is_file():
        return None
    record = json.loads(read_text(path, "run state"))
    if record.get("state") == "complete" or (record.get("state") == "failed" and record.get("trained")):
        return None  # a run whose evaluation failed holds its final weights
    found = latest(str(run))
    use = (f"evaluate, serve or merge its checkpoint ({found}) or resume it with --resume_from_checkpoint true"
           if found else "it saved no checkpoint: train it again")
    if record.get("state") == "stopped":
        return f"{run} holds a run stopped by {record.get('signal')} at step {record.get('step')}, not a finished one; {use}"
    if record.get("state") == "failed":
        return f"{run} holds a run that failed at step {record.get('step')} (a process got no answer from another), not a finished one; {use}"
    return f"{run} holds a run that did not finish (killed, or still training); {use}"


def require_finished(path: Path) -> None:
    """UserError when `path` is a run folder whose run did not finish (a checkpoint of it loads as it is)."""
    why = unfinished(path)
    if why:
        raise UserError(why)
