"""`python -m medsft [train] RECIPE [--key value]`: fine-tune, then evaluate base vs tuned."""

from __future__ import annotations

import os

from medsft.commands.common import gate


def _join_deepspeed(recipe, state) -> None:
    if recipe.training.deepspeed and state.num_processes > 1:
        import deepspeed  # a recipe's ZeRO-3 shards the weights while they load, asking DeepSpeed's process group

        deepspeed.init_distributed(dist_backend=state.backend)  # for the world size: join it to the one we have


def _stopped(console, recipe, result, tracked: bool) -> int:
    import signal

    from medsft.training import tracking

    name = signal.Signals(result.stopped_by).name
    console.print(f"[yellow]stopped by {name} after step {result.steps}; checkpoint saved in {recipe.training.output_dir}: "
                  "resume with --resume_from_checkpoint true")
    if tracked:
        tracking.finish(None, None, recipe.training.output_dir)
    return 128 + result.stopped_by


def _evaluated(console, recipe, prepared) -> list:
    """The datasets scored after training: the test splits, or the suite's less what the run trained on."""
    from medsft.console import evaluation_tables
    from medsft.evaluation import results as evaluation

    if not recipe.script.suite:
        return prepared.datasets
    evaluated, left_out = evaluation.test_datasets(recipe, {d.spec.name: d.parts for d in prepared.datasets}, ids=True)
    evaluation_tables.left_out(console, left_out)
    return evaluated


def _base_first(console, recipe, evaluated: list, tokenizer, scores: dict):
    """For a full fine-tune: the base scored on the model training starts from, before it trains (so that no second
    copy is loaded beside the tuned model afterwards); None where training starts from anything else (an adapter's
    base is the tuned model with its adapter off; DeepSpeed shards the weights before they could be scored)."""
    from medsft.console.progress import eval_progress
    from medsft.evaluation import results as evaluation
    from medsft.models import loading

    if not (loading.full_fine_tune(recipe) and recipe.script.eval_after_train and not recipe.training.deepspeed
            and any(d.parts["test"] for d in evaluated)):
        return None

    def before(model) -> None:
        with eval_progress(console) as track_for:
            scores.update(evaluation.score_base(recipe, model, tokenizer, evaluated, track_for))

    return before


def _evaluate(console, recipe, prepared, evaluated, trainer, result, main_process: bool, base_scores: dict):
    """The test splits (or the suite) scored base vs tuned after training; None when there is nothing to score."""
    from medsft.console import evaluation_tables
    from medsft.console.progress import eval_progress
    from medsft.evaluation import results as evaluation
    from medsft.runs.run_state import failing_when_lost

    if not (recipe.script.eval_after_train and any(d.parts["test"] for d in evaluated)):
        return None
    from medsft.evaluation import contamination

    args = recipe.training
    run = evaluation.run_info(recipe, prepared.datasets, result.steps, result.seconds, run_dir=args.output_dir)
    training = contamination.trained_on(recipe, prepared.datasets)
    with failing_when_lost(args.output_dir, lambda: result.steps, "evaluation", args.ddp_timeout, trained=True), \
            eval_progress(console) as track_for:
        model = trainer.accelerator.unwrap_model(trainer.model)
        results = evaluation.evaluate_run(recipe, model, prepared.tokenizer, evaluated, args.output_dir if main_process
                                          else None, run, track_for, base_scores=base_scores or None, training=training,
                                          weights=args.output_dir)
    evaluation_tables.eval_report(console, results)
    return results


def _audit(console, recipe, prepared, trainer, state) -> None:
    """`audit: true`: what the trained model gives back, audited in this process (medsft audit's numbers)."""
    from medsft.console import audit_report
    from medsft.console.progress import eval_progress
    from medsft.evaluation.audit_run import audit
    from medsft.runs import records

    if state.num_processes > 1:  # the audit decodes in one process; the others' forward passes would not follow
        console.print(f"[yellow]audit: run python -m medsft audit {recipe.training.output_dir} once training is done "
                      "(it runs in one process)")
        return
    digits = (recipe.script.canaries or {}).get("digits", 0)
    with eval_progress(console) as track_for:
        found = audit(recipe, trainer.accelerator.unwrap_model(trainer.model), prepared.tokenizer, prepared.datasets,
                      prepared.canaries or [], digits, seed=recipe.training.seed, track_for=track_for)
    audit_report.report(console, found, records.write_audit(recipe.training.output_dir, found))


def main(argv: list[str]) -> int:
    """Parse the recipe, load model and data, train, report; then score the test splits base vs tuned."""
    from accelerate import PartialState
    from rich.console import Console

    from medsft.console import contamination_report, deid_report, plots, training_tables
    from medsft.console.training_progress import RichProgress
    from medsft.console.quiet import quiet_libraries
    from medsft.recipe import hardware
    from medsft.runs import run_folder
    from medsft.recipe.parser import parse_recipe
    from medsft.training import catalog, fit, prepare, tracking

    quiet_libraries()
    recipe = parse_recipe(argv)
    run_folder.check_output_dir(recipe)
    state = PartialState()
    _join_deepspeed(recipe, state)
    console = Console(quiet=not state.is_main_process)
    if hardware.idle_cores(state.num_processes):
        console.print(
            f"[yellow]accelerate launch set OMP_NUM_THREADS=1: training uses 1 of {os.cpu_count()} cores; "
            f"add --num_cpu_threads_per_process {os.cpu_count() // state.num_processes} (or use ./launch.sh)"
        )
    trainer_unit = catalog.get(recipe.script.trainer)
    with console.status("loading model and data"):
        prepared = prepare.prepare(recipe)
    training_tables.data_summary(console, trainer_unit.data_lines(prepared, recipe.training))
    deid_report.report(console, {d.spec.name: d.deidentified for d in prepared.datasets if d.deidentified})
    if prepared.removed is not None:
        contamination_report.before_training(console, {}, {}, prepared.removed)

    recipe.training.disable_tqdm = True  # the rich bar below replaces tqdm
    tracked = tracking.enabled(recipe) and state.is_main_process
    if tracked:
        tracking.start(recipe)
    evaluated, base_scores = _evaluated(console, recipe, prepared), {}
    before = _base_first(console, recipe, evaluated, prepared.tokenizer, base_scores)
    trainer, result = fit.train(recipe, prepared, callbacks=[RichProgress(console, trainer_unit.progress)], before=before)
    training_tables.train_summary(console, result, recipe.model.model_name_or_path)
    if result.stopped_by is not None:
        return _stopped(console, recipe, result, tracked)
    results = _evaluate(console, recipe, prepared, evaluated, trainer, result, state.is_main_process, base_scores)
    if recipe.script.audit:
        _audit(console, recipe, prepared, trainer, state)
    if state.is_main_process:
        plots.write_plots(recipe.training.output_dir, result.log_history, results)
    if tracked:
        tracking.finish(results, result.eval_loss, recipe.training.output_dir)
    return gate(recipe, result.eval_loss, results)
