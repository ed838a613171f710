"""`python -m medsft [train] RECIPE [--key value]`: fine-tune, then evaluate base vs tuned."""

from __future__ import annotations

import os

from medsft.commands import evaluation_datasets, gate, idle_cores, quiet_libraries, run_info, write_plots


def main(argv: list[str]) -> int:
    """Parse the recipe, load model and data, train, report; then score the test splits base vs tuned."""
    from accelerate import PartialState
    from rich.console import Console

    from medsft import report, tracking, train
    from medsft.config import parse_recipe
    from medsft.progress import RichProgress, eval_progress

    quiet_libraries()
    recipe = parse_recipe(argv)
    train.check_output_dir(recipe)
    state = PartialState()
    if recipe.training.deepspeed and state.num_processes > 1:
        import deepspeed  # a recipe's ZeRO-3 shards the weights while they load, asking DeepSpeed's process group

        deepspeed.init_distributed(dist_backend=state.backend)  # for the world size: join it to the one we have
    console = Console(quiet=not state.is_main_process)
    if idle_cores(state.num_processes):
        console.print(
            f"[yellow]accelerate launch set OMP_NUM_THREADS=1: training uses 1 of {os.cpu_count()} cores; "
            f"add --num_cpu_threads_per_process {os.cpu_count() // state.num_processes} (or use ./launch.sh)"
        )

    with console.status("loading model and data"):
        prepared = train.prepare(recipe)
    report.data_summary(console, prepared.stats, recipe.training.max_length)

    recipe.training.disable_tqdm = True  # the rich bar below replaces tqdm
    tracked = tracking.enabled(recipe) and state.is_main_process
    if tracked:
        tracking.start(recipe)
    trainer, result = train.train(recipe, prepared, callbacks=[RichProgress(console)])
    report.train_summary(console, result, recipe.model.model_name_or_path)
    if result.stopped_by is not None:
        import signal

        name = signal.Signals(result.stopped_by).name
        console.print(f"[yellow]stopped by {name} after step {result.steps}; checkpoint saved in {recipe.training.output_dir}: "
                      "resume with --resume_from_checkpoint true")
        if tracked:
            tracking.finish(None, None, recipe.training.output_dir)
        return 128 + result.stopped_by
    results = None
    evaluated = prepared.datasets
    if recipe.script.suite:
        evaluated = evaluation_datasets(recipe, {d.spec.name: d.parts for d in prepared.datasets}, console, ids=True)
    if recipe.script.eval_after_train and any(d.parts["test"] for d in evaluated):
        run = run_info(recipe, prepared.datasets, result.steps, result.seconds, run_dir=recipe.training.output_dir)
        out = recipe.training.output_dir if state.is_main_process else None
        with eval_progress(console) as track_for:
            model = trainer.accelerator.unwrap_model(trainer.model)
            results = train.evaluate_run(recipe, model, prepared.tokenizer, evaluated, out, run, track_for)
        report.eval_report(console, results)
    if state.is_main_process:
        write_plots(recipe.training.output_dir, result.log_history, results)
    if tracked:
        tracking.finish(results, result.eval_loss, recipe.training.output_dir)
    return gate(recipe, result.eval_loss, results)
