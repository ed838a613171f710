"""Training: the recipe's data and model handed to TRL's SFTTrainer, and the run written to output_dir."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medsft import checkpoints, data, models
from medsft.config import Recipe
from medsft.errors import UserError

RECIPE_FILE = "recipe.yaml"
# Keys that make two runs different runs; anything else (steps, logging, resume) may change between restarts.
IDENTITY = ("task", "dataset_name", "dataset_config", "model_name_or_path", "use_peft", "section", "prompt_style")


def check_output_dir(recipe: Recipe) -> None:
    """Refuse an output_dir that holds something other than this run, before anything is written."""
    out = Path(recipe.training.output_dir)
    if recipe.script.overwrite_output_dir or not out.is_dir() or not any(out.iterdir()):
        return
    saved = out / RECIPE_FILE
    if not saved.is_file():
        raise UserError(f"output_dir {out} is not empty and holds no medsft run; choose another output_dir or pass --overwrite_output_dir true")
    previous = yaml.safe_load(saved.read_text()) or {}
    current = recipe.resolved()
    for key in IDENTITY:
        if previous.get(key) != current.get(key):
            raise UserError(
                f"output_dir {out} holds a different run ({key}: {previous.get(key)!r} there, {current.get(key)!r} now); "
                "choose another output_dir or pass --overwrite_output_dir true"
            )


@dataclass
class Prepared:
    model: Any  # a path for from_pretrained, or a model object (scratch)
    tokenizer: Any
    splits: dict[str, list[dict]]
    train_dataset: Any
    eval_dataset: Any
    stats: dict[str, data.EncodeStats] = field(default_factory=dict)


def prepare(recipe: Recipe) -> Prepared:
    """Everything training needs, loaded and formatted exactly as training will see it; writes nothing."""
    script, args, model_args = recipe.script, recipe.training, recipe.model
    rows = data.load_rows(script, args.seed)
    splits = data.split(rows, script, args.seed)
    if model_args.model_name_or_path == models.SCRATCH:
        texts = [data.format_row(r, script) for r in splits["train"]]
        texts = [t["prompt"] + t["completion"] for t in texts if t]
        model, tokenizer = models.build_scratch(texts, script.scratch_config, args.max_length)
    else:
        model = models.resolve(model_args.model_name_or_path)
        tokenizer = models.load_tokenizer(model, model_args.model_revision, args.trust_remote_code)
    train_dataset, train_stats = data.encode(splits["train"], script, tokenizer, args.max_length)
    if train_dataset is None:
        raise UserError(
            f"max_length {args.max_length} is too small to hold any answer: all {train_stats.rows} training rows "
            f"were dropped ({train_stats.dropped} too long, {train_stats.skipped} unformattable); raise max_length"
        )
    eval_dataset, eval_stats = None, None
    if args.eval_strategy != "no" and splits["eval"]:
        eval_dataset, eval_stats = data.encode(splits["eval"], script, tokenizer, args.max_length)
    stats = {"train": train_stats} | ({"eval": eval_stats} if eval_stats else {})
    return Prepared(model, tokenizer, splits, train_dataset, eval_dataset, stats)


def build_trainer(recipe: Recipe, prepared: Prepared, callbacks=()):
    from trl import get_peft_config, get_quantization_config

    from medsft.trainer import MedsftTrainer

    args, model_args = recipe.training, recipe.model
    if isinstance(prepared.model, str):
        init = dict(
            revision=model_args.model_revision,
            trust_remote_code=args.trust_remote_code,
            attn_implementation=model_args.attn_implementation,
            dtype=model_args.dtype or "float32",  # bf16 autocast wants fp32 master weights
        )
        args.model_init_kwargs = {**init, **(args.model_init_kwargs or {})}
    return MedsftTrainer(
        model=prepared.model,
        args=args,
        train_dataset=prepared.train_dataset,
        eval_dataset=prepared.eval_dataset,
        processing_class=prepared.tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),  # QLoRA; CUDA only, refused on CPU up front
        callbacks=list(callbacks),
    )


@dataclass
class TrainResult:
    output_dir: str
    steps: int
    seconds: float
    train_loss: float | None
    eval_loss: float | None
    tokens: int
    stats: dict[str, data.EncodeStats]
    log_history: list[dict] = field(default_factory=list)
    stopped_by: int | None = None  # the signal that stopped training early (a checkpoint was saved)


def train(recipe: Recipe, prepared: Prepared, callbacks=()) -> tuple[Any, TrainResult]:
    args = recipe.training
    from transformers import PrinterCallback

    resume = checkpoints.resolve(args.resume_from_checkpoint, args.output_dir)
    stopper = checkpoints.StopOnSignal()
    trainer = build_trainer(recipe, prepared, [*callbacks, stopper])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the progress callback shows them
    if trainer.accelerator.is_main_process:  # first: a run killed mid-way is still recognised as this run
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / RECIPE_FILE).write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    trainer.save_model(args.output_dir)
    step = trainer.state.global_step
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    eval_loss = evals[-1] if evals else None
    if eval_loss is None and prepared.eval_dataset is not None and stopper.received is None:  # not evaluated yet
        eval_loss = trainer.evaluate().get("eval_loss")
    if trainer.accelerator.is_main_process:
        trainer.state.save_to_json(str(Path(args.output_dir) / "trainer_state.json"))
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
        stopped_by=stopper.received,
    )
    return trainer, result


def saved_run_time(output_dir: str) -> tuple[int | None, float | None]:
    """(steps, training seconds) of the run saved in output_dir, from its trainer_state.json; Nones without one."""
    import json

    state_file = Path(output_dir) / "trainer_state.json"
    if not state_file.is_file():
        return None, None
    state = json.loads(state_file.read_text())
    runtimes = [h["train_runtime"] for h in state.get("log_history", []) if "train_runtime" in h]
    return state.get("global_step"), (runtimes[-1] if runtimes else None)


def load_trained(recipe: Recipe):
    """(model, tokenizer) for evaluation: base + the adapter in output_dir when there is one, else the base."""
    from transformers import AutoModelForCausalLM

    out = Path(recipe.training.output_dir)
    model_args = recipe.model
    if (out / "config.json").is_file():  # a full fine-tune or a scratch model saved as a whole
        return AutoModelForCausalLM.from_pretrained(out), models.load_tokenizer(str(out))
    path = models.resolve(model_args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(
        path, revision=model_args.model_revision, trust_remote_code=recipe.training.trust_remote_code, dtype="float32"
    )
    if (out / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, out)
    return model, models.load_tokenizer(path, model_args.model_revision, recipe.training.trust_remote_code)


def evaluate_run(recipe: Recipe, model, tokenizer, splits: dict[str, list[dict]], write: bool,
                 run: dict | None = None, track_for=None) -> dict:
    """Score the test split before and after; write eval_results.json (with `run`, what produced it) and
    predictions.jsonl into output_dir. track_for(model_name) gives a progress wrapper for the batches."""
    import json

    import torch

    from medsft import evaluate

    args = recipe.training
    device = "cuda" if torch.cuda.is_available() and not args.use_cpu else "cpu"
    model.to(device)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bool(args.bf16)):
        results, predictions = evaluate.before_and_after(
            model, tokenizer, splits["test"], splits["train"], recipe.script, args.max_length,
            args.per_device_eval_batch_size, args.seed, track_for=track_for, dev_rows=splits["eval"],
        )
    results = {"run": run or {}, **results}
    if write:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_results.json").write_text(json.dumps(results, indent=2))
        (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return results
