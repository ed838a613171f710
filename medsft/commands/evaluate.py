"""`python -m medsft eval RUN_DIR_OR_RECIPE [--key value]`: a trained run, or a base model, scored."""

from __future__ import annotations

from medsft.commands import evaluation_datasets, gate, quiet_libraries, run_info, write_plots
from medsft.errors import UserError


def main(argv: list[str]) -> int:
    """`eval RUN_DIR` or `eval RECIPE`: the trained run (base vs tuned on the test ids it recorded) or, without one
    for this model and data, the base model alone, written to a folder of its own."""
    from pathlib import Path

    import yaml
    from accelerate import PartialState
    from rich.console import Console

    from medsft import checkpoints, report, splits, train
    from medsft.config import parse_recipe, parse_run
    from medsft.progress import eval_progress

    quiet_libraries()
    weights = None  # a run folder or one of its checkpoints, named on the command line
    if argv and Path(argv[0]).is_dir():
        weights = Path(argv[0])
        folder = checkpoints.run_folder(weights)
        if folder is None:
            raise UserError(f"{argv[0]} holds no medsft run (recipe.yaml); give a run folder, one of its checkpoints or a recipe")
        recipe = parse_run(folder, [*argv[1:], "--output_dir", str(folder)])
    else:
        recipe = parse_recipe(argv, loading=True)
    state = PartialState()
    console = Console(quiet=not state.is_main_process)
    run_dir = train.trained_run(recipe, weights)
    out = run_dir or train.eval_dir(recipe)
    if recipe.script.suite:  # beside the run's own evaluation, not over it
        out = out / f"suite-{recipe.script.suite}"
    if run_dir is not None:
        from medsft import provenance

        changed = provenance.mismatch(provenance.read(recipe.training.output_dir))
        if changed:
            console.print(f"[yellow]medsft: warning: {changed}")
    saved = splits.read_ids(recipe.training.output_dir) if run_dir else None
    datasets = evaluation_datasets(recipe, saved, console)
    with console.status("loading model"):
        model, tokenizer = train.load_trained(recipe, run_dir)
    steps, seconds = train.saved_run_time(str(run_dir)) if run_dir else (None, None)
    adapter = bool(run_dir and (run_dir / "adapter_config.json").is_file())
    run = run_info(recipe, datasets, steps, seconds, adapter=adapter, run_dir=recipe.training.output_dir if run_dir else None)
    main = state.is_main_process
    if main and run_dir is None:
        out.mkdir(parents=True, exist_ok=True)
        (out / train.EVAL_FILE).write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
        splits.write_ids(str(out), {d.spec.name: d.parts for d in datasets})
    with eval_progress(console) as track_for:
        results = train.evaluate_run(recipe, model, tokenizer, datasets, str(out) if main else None, run, track_for,
                                     trained=run_dir is not None)
    report.eval_report(console, results)
    if main:
        write_plots(str(out), [], results)
    console.print(f"written to {out}: eval_results.json, predictions.jsonl")
    return gate(recipe, None, results, loss=False)  # no training here: only the accuracy threshold applies
