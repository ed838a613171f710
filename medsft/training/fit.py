"""Training: the prepared data and model handed to the recipe's trainer (catalog.py: TRL's SFTTrainer, GRPOTrainer,
...), and the run written to output_dir: its recipe, hardware settings, split ids, environment and state first, its
final weights last."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from functools import partial
from typing import Any

from medsft.data import encoding
from medsft.models import loading, stages
from medsft.runs import records, run_folder, run_state
from medsft.recipe.parser import Recipe
from medsft.training import catalog, checkpoints, private
from medsft.training.trainers import Prepared


def build_trainer(recipe: Recipe, prepared: Prepared, callbacks=()):
    import copy

    args = copy.copy(recipe.training)
    begin = prepared.start
    if begin is not None and begin.adapter:  # a stage from a LoRA run: its adapter on its base (stages.py)
        prepared.model = stages.adapter_on(loading.load_model(recipe, begin.base), recipe, begin)
    if isinstance(prepared.model, str):  # loaded by TRL with the arguments inference loads it with
        args.model_init_kwargs = {**loading.base_kwargs(recipe), **(args.model_init_kwargs or {})}
    return catalog.get(recipe.script.trainer).build(recipe, prepared, args, callbacks)


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    seconds: float
    train_loss: float | None
    eval_loss: float | None
    tokens: int
    stats: dict[str, encoding.EncodeStats]
    log_history: list[dict] = field(default_factory=list)
    stopped_by: int | None = None  # the signal that stopped training early (a checkpoint was saved)
    summary: list[tuple[str, str]] = field(default_factory=list)  # the trainer's own rows (GRPO: reward, reply length)


def train(recipe: Recipe, prepared: Prepared, callbacks=(), before=None) -> tuple[Any, TrainResult]:
    """Train as the recipe says; `before(model)` runs on the model training starts from (a fresh run only: not when
    resuming), after the run folder is written: what a full fine-tune's base is scored with."""
    args = recipe.training
    from transformers import PrinterCallback

    resume = checkpoints.resolve(args.resume_from_checkpoint, args.output_dir)
    stopper = checkpoints.StopOnSignal()
    trainer = build_trainer(recipe, prepared, [*callbacks, stopper])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the progress callback shows them
    main = trainer.accelerator.is_main_process
    stopper.install()
    if main:
        run_folder.write_start(recipe, {d.spec.name: d.parts for d in prepared.datasets},
                               prepared.start.chain if prepared.start else None, prepared.removed,
                               {d.spec.name: d.deidentified for d in prepared.datasets if d.deidentified},
                               (recipe.script.canaries, prepared.canaries) if prepared.canaries else None)
    lost = partial(run_state.failing_when_lost, args.output_dir, lambda: trainer.state.global_step, timeout=args.ddp_timeout)
    with lost("training"):
        if before is not None and resume is None:
            import torch

            # the base's sample generations seed torch's generator: training draws as it would without them
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
                before(trainer.accelerator.unwrap_model(trainer.model))
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
        stopped = stopper.stopped_by
        if stopped is None:  # a stopped run's weights are in its checkpoint, never in output_dir as if final
            trainer.save_model(args.output_dir)
            if main:  # TRL's frozen copy of an adapter a stage continues (its reference) is saved beside it: not ours
                shutil.rmtree(Path(args.output_dir) / "ref", ignore_errors=True)
    privacy = getattr(trainer, "privacy", None)  # DP-SGD's budget, spent over the steps taken (private.py)
    spent = {"privacy": private.spent(privacy, trainer.state.global_step)} if privacy is not None else {}
    if main:
        run_state.mark(args.output_dir, "complete" if stopped is None else "stopped", trainer.state.global_step, stopped,
                       **spent)
    step = trainer.state.global_step
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    eval_loss = evals[-1] if evals else None
    if eval_loss is None and prepared.eval_dataset is not None and stopped is None:  # not evaluated yet
        with lost("evaluation", trained=True):
            eval_loss = trainer.evaluate().get("eval_loss")
    if main:
        records.save_trainer_state(trainer.state, args.output_dir)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    result = TrainResult(
        output_dir=args.output_dir,
        steps=trainer.state.global_step,
        seconds=seconds,
        train_loss=losses[-1] if losses else None,
        eval_loss=eval_loss,
        tokens=trainer.state.num_input_tokens_seen,
        stats=prepared.stats,
        log_history=history,
        stopped_by=stopped,
        summary=catalog.get(recipe.script.trainer).summary(history) + private.summary(spent.get("privacy")),
    )
    return trainer, result
