"""Training: the recipe's data and model handed to TRL's SFTTrainer, and the run written to output_dir."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medsft import checkpoints, data, encode, mixture, models, provenance, splits
from medsft.config import Recipe
from medsft.errors import UserError

RECIPE_FILE = checkpoints.RECIPE_FILE
HARDWARE_FILE = "hardware.yaml"  # what this machine's defaults set; a record, never read back
HARDWARE_NOTE = "# Set by medsft for the machine that trained this run; the machine that reads the run derives its own.\n"
EVAL_FILE = "evaluation.yaml"  # marks a folder holding an evaluation without training
# Keys that make two runs different runs; anything else (steps, logging, resume) may change between restarts.
IDENTITY = ("task", "dataset_name", "dataset_config", "data_files", "dataset_mixture", "model_name_or_path", "use_peft",
            "section", "prompt_style", "prompt_template", "completion_template")


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
    checkpoints.require_finished(target)
    if (target / "adapter_config.json").is_file() or (target / "config.json").is_file():
        return target
    if weights is not None and target.resolve() != out.resolve():
        raise UserError(f"{weights} holds no weights (adapter_config.json or config.json); name a complete checkpoint")
    return None


def eval_dir(recipe: Recipe) -> Path:
    """Where an evaluation without a trained run writes: the output_dir the command line names (new, empty or an
    earlier evaluation), else outputs/eval/<run>-<model>; a training output_dir is never touched."""
    out = Path(recipe.training.output_dir)
    if "output_dir" in recipe.cli and not (out / RECIPE_FILE).is_file():  # not a run folder: this evaluation's own
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EVAL_FILE).is_file())):
            raise UserError(f"output_dir {out} holds something other than a medsft evaluation; name a new or empty folder")
        return out
    model = str(recipe.model.model_name_or_path).rstrip("/").split("/")[-1]
    return out.parent / "eval" / f"{out.name}-{model}"


@dataclass
class Prepared:
    model: Any  # a path for from_pretrained, or a model object (scratch)
    tokenizer: Any
    datasets: list[data.Dataset]
    train_dataset: Any
    eval_dataset: Any
    stats: dict[str, encode.EncodeStats] = field(default_factory=dict)


def no_training_rows(stats: encode.EncodeStats, max_length: int | None) -> UserError:
    if stats.rows == 0:
        return UserError("no training rows: every dataset is test-only or has weight 0")
    if stats.untrained == stats.rows:
        return UserError(f"none of the {stats.rows} training conversations has an assistant turn: nothing to train "
                         "(assistant_only_loss trains the assistant's replies)")
    if stats.dropped == 0:
        return UserError(f"none of the {stats.rows} training rows could be formatted by the task "
                         "(e.g. a section that is in no note); check the task's keys")
    return UserError(f"max_length {max_length} is too small to hold any answer: all {stats.rows} training rows were "
                     f"dropped ({stats.dropped} too long for their answer and question, {stats.skipped} unformattable); raise max_length")


def load_tokenizer(recipe: Recipe, name: str):
    tokenizer = models.load_tokenizer(name, recipe.model.model_revision, recipe.training.trust_remote_code)
    models.configure_tokenizer(tokenizer, recipe.training)
    return tokenizer


def prepare(recipe: Recipe, saved: dict | None = None) -> Prepared:
    """Everything training needs, loaded and formatted exactly as training will see it; writes nothing."""
    script, args, model_args = recipe.script, recipe.training, recipe.model
    datasets = data.load(mixture.specs(script, args), saved)
    if model_args.model_name_or_path == models.SCRATCH:
        model, tokenizer = models.build_scratch(data.texts(datasets), script.scratch_config, args.max_length, args.seed)
        models.configure_tokenizer(tokenizer, args)
    else:
        model = models.resolve(model_args.model_name_or_path)
        tokenizer = load_tokenizer(recipe, model)
    encoder = encode.Encoder(tokenizer, args.max_length, args.completion_only_loss is not False, args.assistant_only_loss)
    train_dataset, train_stats = data.encoded(datasets, "train", encoder, args.dataset_num_proc)
    if train_dataset is None:
        raise no_training_rows(train_stats, args.max_length)
    eval_dataset, eval_stats = None, None
    if args.eval_strategy != "no" and any(d.parts["eval"] for d in datasets):
        eval_dataset, eval_stats = data.encoded(datasets, "eval", encoder, args.dataset_num_proc)
    stats = {"train": train_stats} | ({"eval": eval_stats} if eval_stats else {})
    return Prepared(model, tokenizer, datasets, train_dataset, eval_dataset, stats)


def build_trainer(recipe: Recipe, prepared: Prepared, callbacks=()):
    import copy

    from trl import get_peft_config, get_quantization_config

    from medsft.trainer import MedsftTrainer, packed_rows

    model_args = recipe.model
    # medsft tokenized the rows, applied the chat template and built the loss mask: TRL must not redo any of it.
    args = copy.copy(recipe.training)
    args.assistant_only_loss, args.chat_template_path, args.eos_token = False, None, None
    if args.padding_free and not args.packing:
        args.max_length = None  # every row fits already; TRL refuses padding_free with a max_length it cannot enforce
    if isinstance(prepared.model, str):
        init = dict(
            revision=model_args.model_revision,
            trust_remote_code=args.trust_remote_code,
            attn_implementation=model_args.attn_implementation,
            dtype=model_args.dtype or "float32",  # bf16 autocast wants fp32 master weights
        )
        args.model_init_kwargs = {**init, **(args.model_init_kwargs or {})}
    trainer = MedsftTrainer(
        model=prepared.model,
        args=args,
        train_dataset=prepared.train_dataset,
        eval_dataset=prepared.eval_dataset,
        processing_class=prepared.tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),  # QLoRA; CUDA only, refused on CPU up front
        callbacks=list(callbacks),
    )
    if args.packing and not args.padding_free:
        trainer.data_collator = packed_rows(trainer.processing_class.pad_token_id, args.pad_to_multiple_of)
    if prepared.eval_dataset is not None:
        from functools import partial

        from medsft import evaluate

        settings = evaluate.Settings(args.max_length, args.per_device_eval_batch_size, args.seed, num_samples=0)
        trainer.task_metrics = partial(evaluate.dev_metrics, tokenizer=prepared.tokenizer, datasets=prepared.datasets, settings=settings)
    return trainer


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
    main = trainer.accelerator.is_main_process
    stopper.install()
    if main:  # first: a run killed mid-way is still recognised as this run, and as unfinished
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / RECIPE_FILE).write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
        (Path(args.output_dir) / HARDWARE_FILE).write_text(HARDWARE_NOTE + yaml.safe_dump(recipe.hardware_settings(), sort_keys=False))
        splits.write_ids(args.output_dir, {d.spec.name: d.parts for d in prepared.datasets})
        provenance.write(args.output_dir, provenance.record(recipe))
        checkpoints.mark(args.output_dir, "training", trainer.state.global_step)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    stopped = stopper.stopped_by
    if stopped is None:  # a stopped run's weights are in its checkpoint, never in output_dir as if final
        trainer.save_model(args.output_dir)
    if main:
        checkpoints.mark(args.output_dir, "complete" if stopped is None else "stopped", trainer.state.global_step, stopped)
    step = trainer.state.global_step
    evals = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == step]
    eval_loss = evals[-1] if evals else None
    if eval_loss is None and prepared.eval_dataset is not None and stopped is None:  # not evaluated yet
        eval_loss = trainer.evaluate().get("eval_loss")
    if main:
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
        stopped_by=stopped,
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


def load_trained(recipe: Recipe, run: Path | None, dequantize: bool = False):
    """(model, tokenizer) for evaluation, generation and merge, loaded as the recipe trained it (loader): the run's
    full model, or the base + the run's adapter, with the run's tokenizer (its chat template and EOS); without a run,
    the base model. `dequantize`: a k-bit base in its compute dtype (what merge folds the adapter into)."""
    from medsft import loader

    model = loader.load_run(recipe, run, dequantize)
    if run is not None and (run / "tokenizer_config.json").is_file():
        return model, load_tokenizer(recipe, str(run))
    return model, load_tokenizer(recipe, models.resolve(recipe.model.model_name_or_path))


def base_of(recipe: Recipe, model):
    """The pretrained weights a full fine-tune started from, to score beside it (an adapter's base needs no second
    load: the adapter is disabled; a model from scratch has none)."""
    from medsft import loader

    if hasattr(model, "disable_adapter") or recipe.model.model_name_or_path == models.SCRATCH:
        return None
    return loader.load_model(recipe, models.resolve(recipe.model.model_name_or_path))


def evaluate_run(recipe: Recipe, model, tokenizer, datasets: list[data.Dataset], out: str | None,
                 run: dict | None = None, track_for=None, trained: bool = True) -> dict:
    """Score every dataset's test split before and after; write eval_results.json (with `run`, what produced it)
    and predictions.jsonl into `out` (None: write nothing, e.g. not the main process). track_for(name) gives a
    progress wrapper for the batches; `trained`: the model was trained (a full fine-tune is shown beside its base)."""
    import json

    import torch

    from accelerate.utils import gather_object

    from medsft import evaluate, loader

    args = recipe.training
    device = loader.device(recipe)
    if not loader.quantized(recipe):  # k-bit weights stay where they were quantized
        model.to(device)
    base = base_of(recipe, model) if trained else None
    evaluate.SCORED["items"] = 0
    settings = evaluate.Settings(args.max_length, args.per_device_eval_batch_size, args.seed, recipe.script.num_samples,
                                 recipe.script.sample_prompts, recipe.script.sample_max_new_tokens)
    evaluations, predictions = [], []
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bool(args.bf16)):
        for dataset in datasets:
            if not dataset.parts["test"]:
                continue
            result, rows = evaluate.before_and_after(model, tokenizer, dataset, settings, track_for, base, trained)
            evaluations.append(result)
            predictions += [{"dataset": dataset.spec.name, **row} for row in rows]
    # how the items were shared out: one count per process (the same results as one process, in a share of the time)
    results = {"run": {**(run or {}), "scored_per_process": gather_object([evaluate.SCORED["items"]])}, "evaluations": evaluations}
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "eval_results.json").write_text(json.dumps(results, indent=2))
        (folder / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return results
