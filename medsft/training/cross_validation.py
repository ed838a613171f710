"""Cross-validation over a split's folds (PubMedQA's official 10 of the 500 non-test items): settings are chosen, and
the decision offsets fitted, on out-of-fold predictions, never on the test split.

Fold f trains on the other folds and scores fold f (its dev set); the folds' dev scores give a mean and spread,
and their pooled out-of-fold log-likelihoods the offsets `calibrate` uses at test time (`calibration_file`).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from medsft.data import splits
from medsft.errors import UserError
from medsft.evaluation import calibration, scoring, stats
from medsft.evaluation.metrics import classification_metrics
from medsft.models import loading
from medsft.models.loading import base_of
from medsft.runs import records, run_state
from medsft.training import fit, prepare


def folds_of(dataset) -> int:
    """How many folds the dataset's split has; UserError when it has none (cross-validation needs them)."""
    _, ids = splits.split_file(dataset.spec)
    ids = ids or dataset.task.official_split()
    present = {r["id"] for role in ("train", "eval") for r in dataset.parts[role]}
    if not ids or "folds" not in ids or not present & {str(i) for fold in ids["folds"] for i in fold}:
        raise UserError(f"cv needs a split with folds (PubMedQA's official split, or a split_file with folds); "
                        f"dataset {dataset.spec.name} has none")
    if not dataset.task.choices:
        raise UserError(f"cv scores a choice task on each fold's dev items; {dataset.task.name} is not one")
    return len(ids["folds"])


def cross_fitted(folds: list[list[dict]], labels: list[str], seed: int) -> dict[str, Any]:
    """Each fold decided with offsets fitted on the other folds' predictions only: what the offsets buy on items
    they never saw (the in-sample figure flatters them). Needs two folds or more."""
    gold, decided = [], []
    for f, held in enumerate(folds):
        others = [p for g, part in enumerate(folds) if g != f for p in part]
        offsets = calibration.fit_offsets([p["loglik"] for p in others], [p["gold"] for p in others], labels)
        decided += calibration.predict([p["loglik"] for p in held], offsets, labels)
        gold += [p["gold"] for p in held]
    m = classification_metrics(gold, decided, labels)
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ci": stats.classification_intervals(gold, decided, labels, seed)}


def summarize(task, fold_predictions: list[list[dict]], base_predictions: list[list[dict]], seed: int) -> dict[str, Any]:
    """Per fold and pooled: accuracy and macro-F1 of the tuned models (argmax), the offsets fitted on the pooled
    out-of-fold predictions (in sample, and cross-fitted fold by fold), and the same for the base model on the same
    items. `base_predictions`: one list per fold (empty for a model from scratch)."""
    labels = task.labels()
    per_fold = [classification_metrics([p["gold"] for p in f], [p["prediction"] for p in f], labels) for f in fold_predictions]

    def decided(folds: list[list[dict]]) -> dict[str, Any]:
        predictions = [p for f in folds for p in f]
        gold = [p["gold"] for p in predictions]
        offsets = calibration.fit_offsets([p["loglik"] for p in predictions], gold, labels)
        argmax = classification_metrics(gold, [p["prediction"] for p in predictions], labels)
        fitted = classification_metrics(gold, calibration.predict([p["loglik"] for p in predictions], offsets, labels), labels)
        out = {"items": len(predictions), "offsets": offsets,
               "argmax": {k: argmax[k] for k in ("accuracy", "macro_f1")},
               "argmax_ci": stats.classification_intervals(gold, [p["prediction"] for p in predictions], labels, seed),
               "with_offsets_in_sample": {k: fitted[k] for k in ("accuracy", "macro_f1")}}
        if sum(1 for f in folds if f) > 1:
            out["with_offsets_cross_fitted"] = cross_fitted([f for f in folds if f], labels, seed)
        return out

    spread = {key: {"mean": statistics.mean(m[key] for m in per_fold),
                    "std": statistics.stdev(m[key] for m in per_fold) if len(per_fold) > 1 else 0.0} for key in ("accuracy", "macro_f1")}
    return {"folds": [{"fold": i, "items": len(f), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
                      for i, (f, m) in enumerate(zip(fold_predictions, per_fold))],
            "tuned": {**spread, "pooled": decided(fold_predictions)},
            # a model trained from scratch has no base to score: nothing pooled rather than offsets fitted on nothing
            "base": {"pooled": decided(base_predictions) if any(base_predictions) else None}}


class Stopped(Exception):
    """A fold's training was stopped by a signal: cross-validation stops there too."""

    def __init__(self, signum: int, fold: int | None = None):
        super().__init__(signum)
        self.signum, self.fold = signum, fold


def fold(recipe, callbacks=()) -> tuple[list[dict], list[dict]]:
    """Train on every fold but the recipe's `fold`, then score that fold's dev rows with the trained model and with
    its base (the adapter disabled, or the pretrained weights reloaded; none for a model from scratch). Stopped when
    a signal stopped the training."""
    prepared = prepare.prepare(recipe)
    dataset, args = prepared.datasets[0], recipe.training

    def score(scored) -> list[dict]:  # in the precision the test split is scored in (evaluation/results.py)
        was_training = scored.training
        scored.eval()
        with scoring.autocast(args, loading.device(recipe)):
            out = scoring.score_choices(scored, prepared.tokenizer, dataset.task, dataset.parts["eval"], args.max_length,
                                        args.per_device_eval_batch_size)
        scored.train(was_training)
        return out

    base_scores = []  # a full fine-tune's base: the model training starts from, scored before it trains
    before = (lambda model: base_scores.append(score(model))) if loading.full_fine_tune(recipe) and not args.deepspeed else None
    trainer, result = fit.train(recipe, prepared, callbacks, before)
    if result.stopped_by is not None:
        raise Stopped(result.stopped_by)
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    with run_state.failing_when_lost(args.output_dir, lambda: result.steps, "fold scoring", args.ddp_timeout, trained=True):
        tuned = score(model)
        if base_scores:
            return tuned, base_scores[0]
        base = base_of(recipe, model)
        if base is not None:
            return tuned, score(base)
        if not hasattr(model, "disable_adapter"):  # a model from scratch has no base
            return tuned, []
        with model.disable_adapter():
            return tuned, score(model)


def run(argv: list[str], folds: int, out: Path, callbacks=(), done=lambda fold, predictions: None):
    """(tuned, base) out-of-fold predictions of the first `folds` folds, each trained by the recipe (`argv`) in
    out/fold-N; done(fold, tuned predictions) after each. Stopped (with its fold) when a signal stops a fold."""
    from medsft.recipe.parser import parse_recipe

    fold_predictions, base_predictions = [], []
    for k in range(folds):
        recipe = parse_recipe([*argv, "--fold", str(k), "--output_dir", str(out / f"fold-{k}"),
                               "--eval_after_train", "false", "--overwrite_output_dir", "true"])
        recipe.training.disable_tqdm = True  # a rich bar replaces tqdm
        try:
            tuned, base = fold(recipe, callbacks)
        except Stopped as stop:
            raise Stopped(stop.signum, k) from None
        fold_predictions.append(tuned)
        base_predictions.append(base)
        done(k, tuned)
    return fold_predictions, base_predictions


def write(folder: Path, results: dict, fold_predictions: list[list[dict]], base_predictions: list[list[dict]]) -> None:
    """cv_results.json, and every out-of-fold item's log-likelihoods (oof_predictions.jsonl) to re-decide later."""
    oof = []
    for i, (tuned, base) in enumerate(zip(fold_predictions, base_predictions)):
        base_of = {p["id"]: p for p in base}
        for p in tuned:
            item = {"fold": i, "id": p["id"], "gold": p["gold"], "tuned_loglik": p["loglik"]}
            if p["id"] in base_of:
                item["base_loglik"] = base_of[p["id"]]["loglik"]
            oof.append(item)
    records.write_cv(folder, results, oof)
