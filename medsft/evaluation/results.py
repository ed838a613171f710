"""An evaluation of a run or a model, as eval_results.json and predictions.jsonl hold it: the datasets it scores
(the recipe's test splits, a run's recorded ones, or a benchmark suite less what the run trained on), the header
saying what produced the numbers, and every test split scored base against tuned."""

from __future__ import annotations

from pathlib import Path

from medsft.data.datasets import Dataset, load
from medsft.evaluation import contamination, generative, protocol, scoring, sharing, suites
from medsft.evaluation.comparison import before_and_after, scored_alone
from medsft.models import loading
from medsft.models.loading import base_of
from medsft.recipe import mixture
from medsft.runs import provenance, records, run_folder
from medsft.recipe.parser import Recipe


def test_datasets(recipe: Recipe, recorded: dict | None, ids: bool = False) -> tuple[list[Dataset], dict[str, int]]:
    """(the datasets an evaluation scores, {benchmark: items left out}): the recipe's own test splits (a run's
    recorded ones), or with `suite` the suite's benchmarks, less the items the run trained or tuned on (`recorded`:
    split_ids.json, or with `ids` the run's rows in memory)."""
    if not recipe.script.suite:
        return load(mixture.specs(recipe.script, recipe.training), recorded), {}
    datasets = load(suites.specs(recipe.script.suite, recipe.script.suite_data, recipe.script.prompt_style))
    if ids and recorded is not None:
        recorded = {name: {role: [r["id"] for r in rows] for role, rows in parts.items()} for name, parts in recorded.items()}
    return datasets, suites.leave_out(datasets, recorded)


def run_info(recipe: Recipe, datasets: list[Dataset], steps: int | None, seconds: float | None, adapter: bool | None = None,
             run_dir=None) -> dict:
    """The header of eval_results.json and of the report: what produced the numbers, and how to reproduce them (the
    trained run's environment.json; for an evaluation alone, this machine's)."""
    return {
        "environment": (provenance.read(run_dir) if run_dir is not None else None) or provenance.record(recipe),
        "recipe": str(recipe.path),
        "model": recipe.model.model_name_or_path,
        "adapter": run_folder.holds_adapter(Path(recipe.training.output_dir)) if adapter is None else adapter,
        "datasets": {d.spec.name: {role: len(rows) for role, rows in d.parts.items()} for d in datasets},
        "deidentified": {d.spec.name: d.deidentified for d in datasets if d.deidentified} or None,
        "steps": steps,
        "train_seconds": seconds,
    }


def _settings(recipe: Recipe, mode: str = "likelihood") -> scoring.Settings:
    args, script = recipe.training, recipe.script
    generation = generative.Generation(script.answer_max_new_tokens, script.num_samples, script.answer_temperature)
    return scoring.Settings(args.max_length, args.per_device_eval_batch_size, args.seed, script.sample_count,
                            script.sample_prompts, script.sample_max_new_tokens, mode, generation)


def _scorings(recipe: Recipe, dataset: Dataset) -> list[scoring.Settings]:
    """The settings of each scoring the recipe asks of this dataset (a choice task may be scored both ways; anything
    else by perplexity), the sample panels generated with the first only."""
    out = [_settings(recipe, mode) for mode in (scoring.modes(recipe.script.scoring) if dataset.task.choices else ["likelihood"])]
    for settings in out[1:]:
        settings.sample_count = 0
    return out


def _placed(recipe: Recipe, model) -> str:
    """The model on the recipe's device (k-bit weights, and a device_map's, stay where they were put)."""
    device = loading.device(recipe)
    if not loading.quantized(recipe) and not recipe.script.device_map:
        model.to(device)
    return device


def score_base(recipe: Recipe, model, tokenizer, datasets: list[Dataset], track_for=None) -> dict[str, dict]:
    """A full fine-tune's base scored on its own ({dataset name: its part}): before training, with the model training
    starts from, or before the tuned model is loaded, so that the two are never held at once."""
    track_for = track_for or (lambda name: sharing.no_track)
    device, out = _placed(recipe, model), {}
    with scoring.autocast(recipe.training, device):
        for dataset in datasets:
            if dataset.parts["test"]:
                for settings in _scorings(recipe, dataset):
                    out[dataset.spec.name, settings.scoring] = scored_alone(model, "base", tokenizer, dataset, settings, track_for)
    return out


def evaluate_run(recipe: Recipe, model, tokenizer, datasets: list[Dataset], out: str | None,
                 run: dict | None = None, track_for=None, trained: bool = True, base_scores: dict | None = None,
                 training: contamination.Training | None = None, weights: str | None = None) -> dict:
    """Score every dataset's test split before and after; write eval_results.json (with `run`, what produced it)
    and predictions.jsonl into `out` (None: write nothing, e.g. not the main process). track_for(name) gives a
    progress wrapper for the batches; `trained`: the model was trained (a full fine-tune is shown beside its base);
    `base_scores`: a full fine-tune's base scored already (score_base), else it is loaded beside the tuned model;
    `training`: the rows the run trains on (contamination.trained_on), each test split checked against them; `weights`: the
    folder of the weights scored (their digest goes in each evaluation's protocol)."""
    from accelerate.utils import gather_object

    args = recipe.training
    device = _placed(recipe, model)
    base = base_of(recipe, model) if trained and base_scores is None else None
    sharing.SCORED["items"] = 0
    evaluations, predictions = [], []
    track = track_for or (lambda name, unit="batches": sharing.no_track)
    found = contamination.check(datasets, training, recipe.script, track("contamination check", "training rows")) \
        if training is not None else {}
    weights_sha256 = protocol.weights_digest(weights, track("weights' digest", "MiB"))
    with scoring.autocast(args, device) as precision, loading.start_scoring(recipe, model, trained) as start:
        for dataset in datasets:
            if not dataset.parts["test"]:
                continue
            for settings in _scorings(recipe, dataset):
                result, rows = before_and_after(model, tokenizer, dataset, settings, track_for, base, trained,
                                                (base_scores or {}).get((dataset.spec.name, settings.scoring)), start,
                                                found.get(dataset.spec.name))
                result["protocol"] = protocol.record(dataset, settings, tokenizer, precision, weights_sha256,
                                                     recipe.script.chat_template_kwargs)
                evaluations.append(result)
                tag = {"scoring": settings.scoring} if "scoring" in result else {}
                predictions += [{"dataset": dataset.spec.name, **tag, **row} for row in rows]
    # how the items were shared out: one count per process (the same results as one process, in a share of the time)
    results = {"run": {**(run or {}), "precision": precision, "scored_per_process": gather_object([sharing.SCORED["items"]])},
               "evaluations": evaluations}
    if out is not None:
        records.write_evaluation(out, results, predictions)
    return results
