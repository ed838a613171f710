"""`python -m medsft eval RUN_DIR_OR_RECIPE [--key value]`: a trained run, or a base model, scored."""

from __future__ import annotations

from pathlib import Path

from medsft.commands.common import gate, pop_option
from medsft.errors import UserError


def _recipe(argv: list[str]):
    """(the recipe, the weights the command line named: a run folder or one of its checkpoints, else None, and the
    folder `--output_dir` names for a run's evaluation, else None). A run's recipe keeps its own output_dir: it is
    where the run's weights, ids and chain are read."""
    from medsft.runs import run_folder
    from medsft.recipe.parser import parse_recipe

    if not (argv and Path(argv[0]).is_dir()):
        return parse_recipe(argv, loading=True), None, None
    weights = Path(argv[0])
    folder = run_folder.folder_of(weights)
    if folder is None:
        raise UserError(f"{argv[0]} holds no medsft run ({run_folder.RECIPE_FILE}); give a run folder, one of its checkpoints or a recipe")
    other, rest = pop_option(argv[1:], "--output_dir")
    elsewhere = run_folder.evaluation_folder(Path(other)) if other and Path(other).resolve() != folder.resolve() else None
    return run_folder.parse_run(folder, [*rest, "--output_dir", str(folder)]), weights, elsewhere


def _base_alone(console, recipe, run_dir, datasets) -> dict | None:
    """A full fine-tune's base, loaded and scored before the tuned model is loaded, then let go: the two are never
    held at once. None for other runs (an adapter's base is its model with the adapter off)."""
    import gc

    from medsft.console.progress import eval_progress
    from medsft.evaluation import results as evaluation
    from medsft.models import loading, locate

    if not loading.full_fine_tune(recipe, run_dir):
        return None
    with console.status("loading the base model"):
        base = loading.load_model(recipe, locate.resolve(recipe.model.model_name_or_path))
        tokenizer = loading.run_tokenizer(recipe, run_dir)
    with eval_progress(console) as track_for:
        scores = evaluation.score_base(recipe, base, tokenizer, datasets, track_for)
    del base
    gc.collect()
    return scores


def main(argv: list[str]) -> int:
    """`eval RUN_DIR` or `eval RECIPE`: the trained run (base vs tuned on the test ids it recorded) or, without one
    for this model and data, the base model alone, written to a folder of its own."""
    from accelerate import PartialState
    from rich.console import Console

    from medsft.console import evaluation_tables, plots
    from medsft.console.progress import eval_progress
    from medsft.console.quiet import quiet_libraries
    from medsft.evaluation import contamination, results as evaluation
    from medsft.models import locate
    from medsft.models.loading import load_trained
    from medsft.runs import provenance, records, run_folder
    from medsft.runs.run_state import failing_when_lost

    quiet_libraries()
    recipe, weights, elsewhere = _recipe(argv)
    state = PartialState()
    console = Console(quiet=not state.is_main_process)
    run_dir = run_folder.trained_run(recipe, weights)
    folder = recipe.training.output_dir if run_dir else None  # the run's own folder: its ids, environment, time
    out = (elsewhere or run_dir or run_folder.eval_dir(recipe)) / (f"suite-{recipe.script.suite}" if recipe.script.suite else "")
    changed = provenance.mismatch(provenance.read(folder)) if folder else None
    if changed:
        console.print(f"[yellow]medsft: warning: {changed}")
    recorded = records.read_ids(folder) if folder else None
    datasets, left_out = evaluation.test_datasets(recipe, recorded)
    training = contamination.trained_on(recipe, contamination.run_datasets(recipe, datasets, recorded))
    evaluation_tables.left_out(console, left_out)
    base_scores = _base_alone(console, recipe, run_dir, datasets) if run_dir is not None else None
    with console.status("loading model"):
        model, tokenizer = load_trained(recipe, run_dir)
    steps, seconds = run_folder.saved_run_time(str(run_dir)) if run_dir else (None, None)
    adapter = bool(run_dir and run_folder.holds_adapter(run_dir))
    run = evaluation.run_info(recipe, datasets, steps, seconds, adapter=adapter, run_dir=folder)
    main_process = state.is_main_process
    if main_process and (run_dir is None or elsewhere is not None):  # a folder of its own: marked, with its ids
        run_folder.write_evaluation_start(recipe, out, {d.spec.name: d.parts for d in datasets})
    # a process lost here fails this evaluation, not the run it scores: run_state.json is left as it is
    with failing_when_lost(None, lambda: steps, "evaluation", recipe.training.ddp_timeout), eval_progress(console) as track_for:
        results = evaluation.evaluate_run(recipe, model, tokenizer, datasets, str(out) if main_process else None, run,
                                          track_for, trained=run_dir is not None, base_scores=base_scores, training=training,
                                          weights=run_dir or locate.resolve(recipe.model.model_name_or_path))
    evaluation_tables.eval_report(console, results)
    if main_process:
        plots.write_plots(str(out), [], results)
    console.print(f"written to {out}: {records.EVAL_RESULTS}, {records.PREDICTIONS}")
    return gate(recipe, None, results, loss=False)  # no training here: only the accuracy threshold applies
