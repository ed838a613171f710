"""`python -m medsft cv RECIPE [--folds K]`: cross-validation over a split's folds."""

from __future__ import annotations

from medsft.commands.common import pop_int
from medsft.errors import UserError


def main(argv: list[str]) -> int:
    """`cv RECIPE [--folds K] [--key value]`: train on all folds but one, score that fold, for the first K folds;
    report mean and spread of dev accuracy and macro-F1 and write the out-of-fold offsets (cv_results.json)."""
    from pathlib import Path

    from accelerate import PartialState
    from rich.console import Console

    from medsft.console import evaluation_tables
    from medsft.console.training_progress import RichProgress
    from medsft.console.quiet import quiet_libraries
    from medsft.data import datasets as data
    from medsft.evaluation import scoring
    from medsft.recipe import mixture, trainer_keys
    from medsft.recipe.parser import parse_recipe
    from medsft.runs import records
    from medsft.training import catalog
    from medsft.training import cross_validation as cv

    folds, argv = pop_int(argv, "--folds", "folds, e.g. --folds 10")
    quiet_libraries()
    recipe = parse_recipe(argv)
    script = recipe.script
    if not trainer_keys.get(script.trainer).cross_validates or script.scoring != "likelihood":
        able = " or ".join(k.name for k in trainer_keys.TRAINERS.values() if k.cross_validates)
        setting = f"trainer: {script.trainer}" if script.scoring == "likelihood" else f"scoring: {script.scoring}"
        raise UserError(f"cv trains each fold with trainer: {able} and decides its dev items by likelihood (fitting "
                        f"the offsets it writes); it does not run {setting}: compare such settings with eval on the "
                        "dev split (--test_split validation), never on the test split")
    main_process = PartialState().is_main_process
    console = Console(quiet=not main_process)
    datasets = data.load(mixture.specs(recipe.script, recipe.training))
    if len(datasets) != 1:
        raise UserError("cv runs on one dataset; a dataset_mixture has several")
    available = cv.folds_of(datasets[0])
    folds = available if folds is None else folds
    if not 1 <= folds <= available:
        raise UserError(f"--folds must be between 1 and {available}, got {folds}")
    out = Path(recipe.training.output_dir + "-cv")

    def done(fold: int, tuned: list[dict]) -> None:
        right = sum(p["prediction"] == p["gold"] for p in tuned)
        console.print(f"fold {fold}: dev accuracy {right / max(len(tuned), 1):.3f} on {len(tuned)} items")

    try:
        progress = RichProgress(console, catalog.get(script.trainer).progress)
        fold_predictions, base_predictions = cv.run(argv, folds, out, [progress], done)
    except cv.Stopped as stop:
        import signal

        console.print(f"[yellow]stopped by {signal.Signals(stop.signum).name} in fold {stop.fold}; "
                      f"{stop.fold} fold(s) done, nothing summarized")
        return 128 + stop.signum
    results = cv.summarize(datasets[0].task, fold_predictions, base_predictions, recipe.training.seed)
    results["recipe"], results["folds_used"], results["folds_available"] = str(recipe.path), folds, available
    results["precision"] = scoring.precision(recipe.training)  # the same as the test split's (eval_results.json)
    path = records.cv_results(out)
    if main_process:  # every rank holds the same gathered predictions; one writes them
        cv.write(out, results, fold_predictions, base_predictions)
    evaluation_tables.cv_report(console, results)
    console.print(f"written to {path}; decide the test split with these offsets: --calibration_file {path}")
    return 0

