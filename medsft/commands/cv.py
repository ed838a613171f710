"""`python -m medsft cv RECIPE [--folds K]`: cross-validation over a split's folds."""

from __future__ import annotations

from medsft.commands import quiet_libraries
from medsft.errors import UserError


def main(argv: list[str]) -> int:
    """`cv RECIPE [--folds K] [--key value]`: train on all folds but one, score that fold, for the first K folds;
    report mean and spread of dev accuracy and macro-F1 and write the out-of-fold offsets (cv_results.json)."""
    from pathlib import Path

    from accelerate import PartialState
    from rich.console import Console

    from medsft import cv, data, evaluate, mixture, report, train
    from medsft.config import parse_recipe
    from medsft.progress import RichProgress

    folds = None
    if "--folds" in argv:
        i = argv.index("--folds")
        try:
            folds = int(argv[i + 1])
        except (IndexError, ValueError):
            raise UserError("--folds needs a number of folds, e.g. --folds 10") from None
        argv = argv[:i] + argv[i + 2:]
    quiet_libraries()
    recipe = parse_recipe(argv)
    console = Console(quiet=not PartialState().is_main_process)
    datasets = data.load(mixture.specs(recipe.script, recipe.training))
    if len(datasets) != 1:
        raise UserError("cv runs on one dataset; a dataset_mixture has several")
    available = cv.folds_of(datasets[0])
    folds = available if folds is None else folds
    if not 1 <= folds <= available:
        raise UserError(f"--folds must be between 1 and {available}, got {folds}")
    out = Path(recipe.training.output_dir + "-cv")
    args = recipe.training
    settings = evaluate.Settings(args.max_length, args.per_device_eval_batch_size, args.seed, num_samples=0)
    fold_predictions, base_predictions = [], []
    for fold in range(folds):
        fold_recipe = parse_recipe([*argv, "--fold", str(fold), "--output_dir", str(out / f"fold-{fold}"),
                                    "--eval_after_train", "false", "--overwrite_output_dir", "true"])
        recipe.training.disable_tqdm = fold_recipe.training.disable_tqdm = True
        prepared = train.prepare(fold_recipe)
        trainer, _ = train.train(fold_recipe, prepared, callbacks=[RichProgress(console)])
        model, dataset = trainer.accelerator.unwrap_model(trainer.model), prepared.datasets[0]
        model.eval()
        fold_predictions.append(cv.score(model, prepared.tokenizer, dataset.task, dataset.parts["eval"], settings))
        base = train.base_of(fold_recipe, model)
        if base is not None or hasattr(model, "disable_adapter"):
            with (model.disable_adapter() if base is None else _nothing()):
                base_predictions += cv.score(base or model, prepared.tokenizer, dataset.task, dataset.parts["eval"], settings)
        last = fold_predictions[-1]
        console.print(f"fold {fold}: dev accuracy {sum(p['prediction'] == p['gold'] for p in last) / max(len(last), 1):.3f} "
                      f"on {len(last)} items")
    results = cv.summarize(dataset.task, fold_predictions, base_predictions, args.seed)
    results["recipe"], results["folds_used"], results["folds_available"] = str(recipe.path), folds, available
    path = cv.write(out, results)
    report.cv_report(console, results)
    console.print(f"written to {path}; decide the test split with these offsets: --calibration_file {path}")
    return 0


def _nothing():
    from contextlib import nullcontext

    return nullcontext()
