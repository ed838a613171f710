"""Base against tuned on one dataset's test split, as eval_results.json reports it: each model scored on the same
items (the base with the adapter disabled: the same weights, no second load), decided with per-choice offsets where
the recipe says (fitted on the dev rows, or by `medsft cv`), with bootstrap intervals, paired tests against each
other and the majority baseline, and sample generations from both under the same seeds."""

from __future__ import annotations

from typing import Any, Callable

from medsft.data.prompts import prompt_ids
from medsft.evaluation import calibration, pairwise, stats
from medsft.evaluation.generative import generated_metrics
from medsft.evaluation.metrics import classification_metrics, majority_baseline
from medsft.evaluation.scoring import Settings, evaluate_split, perplexity_metrics, score_choices
from medsft.evaluation.sharing import Track, no_track
from medsft.generation.completion import generate
from medsft.tasks import Task


def calibrated(model, tokenizer, task: Task, dev_rows: list[dict], predictions: list[dict], settings: Settings,
               track: Track) -> dict[str, Any]:
    """Refit the predictions' decisions with offsets fitted on the dev rows (see calibration.py); returns the
    offsets and the dev size."""
    dev = score_choices(model, tokenizer, task, dev_rows, settings.max_length, settings.batch_size, track)
    offsets = calibration.fit_offsets([p["loglik"] for p in dev], [p["gold"] for p in dev], task.labels())
    for p, label in zip(predictions, calibration.predict([p["loglik"] for p in predictions], offsets, task.labels())):
        p["prediction"] = label
    return {"offsets": offsets, "dev_items": len(dev)}


def decided_with_offsets(model, name: str, tokenizer, dataset, metrics: dict, predictions: list[dict], settings: Settings,
                         track: Track) -> dict[str, Any]:
    """The metrics once each prediction is decided with offsets: the cv run's (`calibration_file`) or fitted on the
    dev rows (`calibrate`); the argmax's metrics kept beside them."""
    task, spec = dataset.task, dataset.spec
    if spec.calibration_file:  # fitted by `medsft cv` on out-of-fold predictions
        record = {"offsets": calibration.offsets_from(spec.calibration_file, name), "source": spec.calibration_file}
        for p, label in zip(predictions, calibration.predict([p["loglik"] for p in predictions], record["offsets"], task.labels())):
            p["prediction"] = label
    else:
        record = calibrated(model, tokenizer, task, dataset.parts["eval"], predictions, settings, track)
    record["argmax"] = {k: metrics[k] for k in ("accuracy", "macro_f1")}  # evaluate_split's, before the refit
    refit = classification_metrics([p["gold"] for p in predictions], [p["prediction"] for p in predictions], task.labels())
    refit["calibration"] = record
    return refit


def score_model(model, name: str, tokenizer, dataset, settings: Settings, track_for: Callable[[str], Track]):
    """(metrics, predictions) of one model on the test split: decided as the recipe says, with intervals."""
    task, spec, parts = dataset.task, dataset.spec, dataset.parts
    prefix = f"{spec.name} " if spec.name != task.name else ""
    label = prefix + name + (" answers" if task.choices and settings.scoring == "generate" else "")
    metrics, predictions = evaluate_split(model, tokenizer, task, parts["test"], settings, track_for(label))
    likelihood = task.choices and settings.scoring == "likelihood"  # generated answers carry their own intervals
    if likelihood and (spec.calibration_file or (spec.calibrate and parts["eval"])):
        metrics = decided_with_offsets(model, name, tokenizer, dataset, metrics, predictions, settings,
                                       track_for(f"{prefix}{name} dev"))
    if likelihood and parts["test"]:
        gold, predicted = [p["gold"] for p in predictions], [p["prediction"] for p in predictions]
        metrics["ci"] = stats.classification_intervals(gold, predicted, task.labels(), settings.seed)
    return metrics, predictions


def comparisons(task: Task, rows: list[dict], predictions: dict[str, list[dict]], majority: dict | None,
                seed: int) -> dict[str, Any]:
    """Paired tests on the same items: tuned vs base, and each model vs the majority baseline (choice tasks: exact
    McNemar and a paired bootstrap of macro-F1; perplexity: a paired bootstrap of the ratio)."""
    out: dict[str, Any] = {}
    if not task.choices:
        for first in ("base", "start"):
            if {first, "tuned"} <= set(predictions):
                before, tuned = predictions[first], predictions["tuned"]
                out[f"tuned_vs_{first}"] = stats.paired_perplexity([p["loglik"] for p in before],
                                                                   [p["loglik"] for p in tuned],
                                                                   [p["tokens"] for p in before], seed)
                if "pairs" in tuned[0]:  # DPO's implicit reward of tuned against it, on the held-out pairs
                    out[f"tuned_vs_{first}_rewards"] = pairwise.reward_test([p["pairs"] for p in before],
                                                                            [p["pairs"] for p in tuned], seed)
        return out
    gold = [task.gold(r) for r in rows]
    runs = {name: [p["prediction"] for p in preds] for name, preds in predictions.items()}
    final = "tuned" if "tuned" in runs else "base"
    if majority is not None:
        runs["majority"] = [majority["label"]] * len(rows)
        majority["ci"] = stats.classification_intervals(gold, runs["majority"], task.labels(), seed)
    for second, first in (("tuned", "base"), ("tuned", "start"), (final, "majority"), ("base", "majority")):
        if first in runs and second in runs:
            out[f"{second}_vs_{first}"] = stats.paired(gold, runs[first], runs[second], task.labels(), seed)
    for first in ("base", "start"):  # generated answers read leniently
        if {first, "tuned"} <= set(predictions) and "lenient" in predictions[first][0]:
            lenient = {name: [p["lenient"] for p in predictions[name]] for name in (first, "tuned")}
            out[f"tuned_vs_{first}_lenient"] = stats.paired(gold, lenient[first], lenient["tuned"], task.labels(), seed)
    return out


def on_clean_items(task: Task, rows: list[dict], predictions: dict[str, list[dict]], contaminated: list[str],
                   seed: int) -> dict[str, Any]:
    """Each model's metrics on the items the contamination check left clean, with intervals, and the paired tests
    between the models on them."""
    dirty = set(contaminated)
    keep = [i for i, r in enumerate(rows) if r["id"] not in dirty]
    if not keep:  # every item contaminated: nothing clean to score
        return {"n": 0, "models": {}, "tests": {}}
    kept_rows = [rows[i] for i in keep]
    kept = {name: [preds[i] for i in keep] for name, preds in predictions.items()}
    models = {}
    for name, preds in kept.items():
        if task.choices and preds and "lenient" in preds[0]:  # generated answers: read as the whole split's are
            models[name] = generated_metrics(preds, task.labels(), seed)
        elif task.choices:
            gold, predicted = [p["gold"] for p in preds], [p["prediction"] for p in preds]
            models[name] = {**classification_metrics(gold, predicted, task.labels()),
                            "ci": stats.classification_intervals(gold, predicted, task.labels(), seed)}
        else:
            models[name] = perplexity_metrics([p["loglik"] for p in preds], [p["tokens"] for p in preds], seed)
    return {"n": len(keep), "models": models, "tests": comparisons(task, kept_rows, kept, None, seed)}


def _models(model, base_model, trained: bool):
    """(name, model) to score in turn: the base with the adapter disabled while it is scored (or `base_model`, the
    weights a full fine-tune started from), then the tuned model; a model alone is "tuned" when it was trained."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield "base", model
        yield "tuned", model
    elif base_model is not None:
        yield "base", base_model.eval()
        yield "tuned", model
    else:
        yield ("tuned" if trained else "base"), model


def _header(dataset, settings: Settings) -> dict[str, Any]:
    task, spec = dataset.task, dataset.spec
    result: dict[str, Any] = {"name": spec.name, "task": task.name, "n": len(dataset.parts["test"]), "models": {}}
    if "prompt_style" in task.options:
        result["prompt_style"] = spec.prompt_style
    if task.choices:
        result["labels"] = task.labels()
        result["scoring"] = settings.scoring
        if settings.scoring == "generate":
            g = settings.generation
            result["generation"] = {"max_new_tokens": g.max_new_tokens, "num_samples": g.num_samples,
                                    "temperature": g.temperature}
    return result


def prediction_rows(predictions: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """predictions.jsonl's rows: each item's gold answer, and each model's prediction and log-likelihood (or its
    reply, and the answer read strictly and leniently)."""
    rows = []
    for i, row in enumerate(next(iter(predictions.values()), [])):
        item = {"id": row["id"], "gold": row["gold"]}
        if "tokens" in row:  # the scored tokens' count: the same for every model (perplexity's weights)
            item["tokens"] = row["tokens"]
        for name, preds in predictions.items():  # prediction and loglik; a generated answer's reply and lenient reading
            item.update({f"{name}_{key}": value for key, value in preds[i].items() if key not in ("id", "gold", "tokens")})
        rows.append(item)
    return rows


def _sample_prompts(tokenizer, dataset, settings: Settings) -> tuple[list[dict], list[list[int]]]:
    """The sample panels' items and their prompts, shortened as training shortens a prompt."""
    samples = dataset.task.samples(dataset.parts["test"], settings.sample_count, settings.seed, settings.sample_prompts)
    room = None if settings.max_length is None else max(1, settings.max_length - settings.sample_max_new_tokens)
    return samples, [prompt_ids(tokenizer, s.pop("input"), room) for s in samples]


def scored_alone(model, name: str, tokenizer, dataset, settings: Settings, track_for: Callable[[str], Track],
                 prompts: list[list[int]] | None = None) -> dict[str, Any]:
    """One model's part of an evaluation: {metrics, predictions, texts} (its sample generations), in eval mode; what a
    full fine-tune's base contributes when it is scored on its own, before training or before the tuned model loads."""
    if prompts is None:
        _, prompts = _sample_prompts(tokenizer, dataset, settings)
    was_training = model.training
    model.eval()
    metrics, predictions = score_model(model, name, tokenizer, dataset, settings, track_for)
    temperature = 0.0 if dataset.task.choices else 0.7  # greedy where the decision is the argmax; free text loops greedily
    texts = generate(model, tokenizer, prompts, settings.sample_max_new_tokens, temperature, seed=settings.seed)
    model.train(was_training)
    return {"metrics": metrics, "predictions": predictions, "texts": texts}


def before_and_after(model, tokenizer, dataset, settings: Settings,
                     track_for: Callable[[str], Track] | None = None, base_model=None,
                     trained: bool = True, base_scored: dict | None = None,
                     start=None, contamination: dict | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(one evaluation of eval_results.json, predictions.jsonl's rows) for one dataset's test split. `base_scored`:
    the base's part, scored already on its own (scored_alone), so that no base is held beside the tuned model.
    `start`: for a stage, a context holding the model it started from (loading.start_scoring), scored between them.
    `contamination`: the dataset's record from contamination.check; with contaminated items, the scores on the clean ones."""
    track_for = track_for or (lambda name: no_track)
    task, rows = dataset.task, dataset.parts["test"]
    result = _header(dataset, settings)
    samples, prompts = _sample_prompts(tokenizer, dataset, settings)
    parts = {"base": base_scored} if base_scored is not None else {}
    for name, scored in [("tuned", model)] if base_scored is not None else _models(model, base_model, trained):
        parts[name] = scored_alone(scored, name, tokenizer, dataset, settings, track_for, prompts)
    if start is not None:
        with start() as begun:
            parts["start"] = scored_alone(begun, "start", tokenizer, dataset, settings, track_for, prompts)
        parts = {name: parts[name] for name in ("base", "start", "tuned") if name in parts}
    predictions: dict[str, list] = {}
    for name, part in parts.items():
        result["models"][name], predictions[name] = part["metrics"], part["predictions"]
        for sample, text in zip(samples, part["texts"]):
            sample[name] = text
    if task.choices:
        result["majority_baseline"] = majority_baseline([task.gold(r) for r in dataset.parts["train"]], [task.gold(r) for r in rows],
                                                        task.labels())
    if rows:
        result["tests"] = comparisons(task, rows, predictions, result.get("majority_baseline"), settings.seed)
    if contamination is not None:
        result["contamination"] = contamination
        if contamination["ids"] and rows:
            result["clean"] = on_clean_items(task, rows, predictions, contamination["ids"], settings.seed)
    result["samples"] = samples
    return result, prediction_rows(predictions)
