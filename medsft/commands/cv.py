"""`python -m medsft cv RECIPE [--folds K]`: cross-validation over a split's folds."""

from __future__ import annotations

from medsft.commands import pop_int, quiet_libraries
from medsft.errors import UserError


def main(argv: list[str]) -> int:
    """`cv RECIPE [--folds K] [--key value]`: train on all folds but one, score that fold, for the first K folds;
    report mean and spread of dev accuracy and macro-F1 and write the out-of-fold offsets (cv_results.json)."""
    from pathlib import Path

    from accelerate import PartialState
    from rich.console import Console

    from medsft import cv, data, mixture, report
    from medsft.config import parse_recipe
    from medsft.progress import RichProgress

    folds, argv = pop_int(argv, "--folds", "folds, e.g. --folds 10")
    quiet_libraries()
    recipe = parse_recipe(argv)
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
    fold_predictions, base_predictions = [], []
    for fold in range(folds):
        fold_recipe = parse_recipe([*argv, "--fold", str(fold), "--output_dir", str(out / f"fold-{fold}"),
                                    "--eval_after_train", "false", "--overwrite_output_dir", "true"])
        fold_recipe.training.disable_tqdm = True  # the rich bar replaces tqdm
        try:
            tuned, base = cv.fold(fold_recipe, [RichProgress(console)])
        except cv.Stopped as stop:
            import signal

            console.print(f"[yellow]stopped by {signal.Signals(stop.signum).name} in fold {fold}; "
                          f"{fold} fold(s) done, nothing summarized")
            return 128 + stop.signum
        fold_predictions.append(tuned)
        base_predictions.append(base)
        right = sum(p["prediction"] == p["gold"] for p in tuned)
        console.print(f"fold {fold}: dev accuracy {right / max(len(tuned), 1):.3f} on {len(tuned)} items")
    results = cv.summarize(datasets[0].task, fold_predictions, base_predictions, recipe.training.seed)
    results["recipe"], results["folds_used"], results["folds_available"] = str(recipe.path), folds, available
    path = out / cv.RESULTS_FILE
    if main_process:  # every rank holds the same gathered predictions; one writes them
        cv.write(out, results, fold_predictions, base_predictions)
    report.cv_report(console, results)
    console.print(f"written to {path}; decide the test split with these offsets: --calibration_file {path}")
    return 0

