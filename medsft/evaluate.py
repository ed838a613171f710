"""Evaluation: choice log-likelihoods and their metrics, perplexity, samples. Returns data; report.py renders it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from medsft import calibrate, encode, stats
from medsft.generate import generate
from medsft.metrics import classification_metrics, majority_baseline
from medsft.tasks import Task

# track(batches, total) -> batches: how a caller shows progress (rich's track, a test's counter); identity by default.
Track = Callable[[Iterable, int], Iterable]


def _no_track(batches: Iterable, total: int) -> Iterable:
    return batches


@dataclass
class Settings:
    max_length: int | None = None
    batch_size: int = 8
    seed: int = 0
    num_samples: int = 3
    sample_prompts: list[str] | None = None
    sample_max_new_tokens: int = 64


# Sequences each process scored in this process's life: the 2-process test reads it back.
SCORED = {"items": 0}


def _my_batches(batches: list[list[int]]) -> list[tuple[int, list[int]]]:
    """This process's share of the batches: every num_processes-th, padded with a repeat of batch 0 so that every
    rank runs the same number of forward passes (under ZeRO-3 each one is collective); padding is marked -1."""
    from accelerate import PartialState

    state = PartialState()
    n, rank = state.num_processes, state.process_index
    mine = [(j, batches[j]) for j in range(rank, len(batches), n)]
    return mine + [(-1, batches[0])] * (-(-len(batches) // n) - len(mine)) if batches else []


@torch.no_grad()
def _scored(model, sequences: list[list[int]], positions: list[list[int]], pad_id: int, batch_size: int,
            reduce: Callable[[int, torch.Tensor], Any], track: Track = _no_track) -> list:
    """reduce(i, next-token log-probabilities at positions[i] of sequences[i], shape (len(positions[i]), vocab))
    for every sequence, in order.

    Sequences are batched by length and right-padded, so positions need no shifting; the LM head runs only on the
    requested positions (`logits_to_keep` as a boolean mask). Under several processes each scores whole batches of
    that one length-sorted list and the reduced values are gathered: every sequence is padded and batched as a
    single process would, so the numbers are the same to the bit, in bf16 too."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mine, out = _my_batches(batches), {}
    for j, chunk in track(mine, len(mine)):
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for row, i in enumerate(chunk):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            attention[row, : len(sequences[i])] = 1
            keep[row, positions[i]] = True
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), logits_to_keep=keep.to(device)).logits
        if j < 0:
            continue
        log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
        k = 0
        for i in chunk:  # kept rows come out in (row, position) order
            n = len(positions[i])
            out[i] = reduce(i, log_probs[k : k + n])
            k += n
    SCORED["items"] += len(out)
    if PartialState().num_processes > 1:
        out = {i: v for part in gather_object([out]) for i, v in part.items()}
    return [out[i] for i in range(len(sequences))]


def _token_logliks(model, sequences: list[list[int]], targets: list[list[int]], pad_id: int, batch_size: int,
                   track: Track = _no_track) -> list[float]:
    """Summed log-probability of the tokens at `targets[i]` (indices into sequences[i]) given what precedes them."""
    positions = [[t - 1 for t in ts] for ts in targets]

    def summed(i: int, lp: torch.Tensor) -> float:
        ids = torch.tensor([sequences[i][t] for t in targets[i]])
        return lp.gather(-1, ids.unsqueeze(-1)).sum().item()

    return _scored(model, sequences, positions, pad_id, batch_size, summed, track)


def scoring_prompt(task: Task, row: dict, tokenizer, room: int | None) -> list[int]:
    """The row's prompt as training tokenizes it, shortened from the left as training shortens it (the question
    and answer cue kept). An item whose cue alone exceeds the room is still scored, cut plainly."""
    example = task.example(row)
    ids = encode.prompt_ids(tokenizer, example.prompt)
    if room is None or len(ids) <= room:
        return ids
    if isinstance(example.prompt, list):
        fitted = encode.fit_chat(tokenizer, example.prompt, room, example.cue)
        if fitted is not None:
            return encode.chat_ids(tokenizer, fitted, True)
        return encode.fit_prompt(ids, 0, room, tokenizer.bos_token_id)
    keep = encode.protected(tokenizer, example.prompt, example.cue, ids)
    return encode.fit_prompt(ids, keep, room, tokenizer.bos_token_id) or encode.fit_prompt(ids, 0, room, tokenizer.bos_token_id)


def score_choices(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int = 8,
                  track: Track = _no_track) -> list[dict[str, Any]]:
    """Per item: id, gold, prediction (argmax of summed log-likelihood) and each choice's log-likelihood.

    Each choice is scored as its continuation after the prompt (" yes", " B"), as lm-evaluation-harness does.
    When every choice is one token, one forward pass per prompt scores all of them from the same next-token
    distribution; otherwise each choice is its own sequence."""
    labels = [task.row_labels(r) for r in rows]
    cont = {c: tokenizer(task.continuation(c), add_special_tokens=False)["input_ids"] for ls in labels for c in ls}
    longest = max(map(len, cont.values()))
    room = None if max_length is None else max_length - longest
    prompts = [scoring_prompt(task, r, tokenizer, room) for r in rows]
    pad = tokenizer.pad_token_id
    if longest == 1:
        scores = _scored(model, prompts, [[len(p) - 1] for p in prompts], pad, batch_size,
                         lambda i, lp: lp[0, [cont[c][0] for c in labels[i]]].tolist(), track)
    else:
        sequences = [p + cont[c] for p, ls in zip(prompts, labels) for c in ls]
        targets = [list(range(len(p), len(p) + len(cont[c]))) for p, ls in zip(prompts, labels) for c in ls]
        flat = iter(_token_logliks(model, sequences, targets, pad, batch_size, track))
        scores = [[next(flat) for _ in ls] for ls in labels]
    results = []
    for row, ls, s in zip(rows, labels, scores):
        best = max(range(len(ls)), key=lambda j: s[j])
        results.append({"id": row["id"], "gold": task.gold(row), "prediction": ls[best], "loglik": dict(zip(ls, s))})
    return results


def item_logliks(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int = 4,
                 track: Track = _no_track) -> tuple[list[float], list[int]]:
    """Per row: the summed log-likelihood of its trained tokens (completions, assistant turns, whole texts; EOS
    included), tokenized exactly as training tokenizes it, and how many tokens that is."""
    encoder = encode.Encoder(tokenizer, max_length)
    sequences, targets, owner = [], [], []
    for i, row in enumerate(rows):
        example = task.example(row)
        for piece in (encoder(example)[0] if example is not None else []):
            trained = [t for t, label in enumerate(piece["labels"]) if label != encode.IGNORE and t > 0]
            if trained:
                sequences.append(piece["input_ids"])
                targets.append(trained)
                owner.append(i)
    scores = _token_logliks(model, sequences, targets, tokenizer.pad_token_id, batch_size, track)
    logliks, tokens = [0.0] * len(rows), [0] * len(rows)
    for i, score, target in zip(owner, scores, targets):
        logliks[i] += score
        tokens[i] += len(target)
    return logliks, tokens


def perplexity(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int = 4,
               track: Track = _no_track) -> float:
    """Token-weighted perplexity of the rows' trained tokens."""
    logliks, tokens = item_logliks(model, tokenizer, task, rows, max_length, batch_size, track)
    return math.exp(-sum(logliks) / max(sum(tokens), 1))


def evaluate_split(model, tokenizer, task: Task, rows: list[dict], settings: Settings,
                   track: Track = _no_track) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics for the model as it is, and its predictions (one dict per item; none for perplexity), the items
    shared out among the processes."""
    if task.choices:
        predictions = score_choices(model, tokenizer, task, rows, settings.max_length, settings.batch_size, track)
        gold, predicted = [p["gold"] for p in predictions], [p["prediction"] for p in predictions]
        return classification_metrics(gold, predicted, task.labels()), predictions
    logliks, tokens = item_logliks(model, tokenizer, task, rows, settings.max_length, settings.batch_size, track)
    metrics = {"perplexity": math.exp(-sum(logliks) / max(sum(tokens), 1))}
    if rows:
        metrics["ci"] = {"perplexity": stats.perplexity_interval(logliks, tokens, settings.seed)}
    return metrics, [{"id": r["id"], "gold": None, "prediction": None, "loglik": ll, "tokens": n}
                     for r, ll, n in zip(rows, logliks, tokens)]


def dev_metrics(model, tokenizer, datasets: list, settings: Settings) -> dict[str, float]:
    """Each dataset's dev rows scored with its task's own metric (choice tasks: accuracy and macro-F1 by the
    log-likelihood scorer, argmax; others: perplexity); keys prefixed by the dataset's name when there are several."""
    scored = [d for d in datasets if d.parts["eval"]]
    out = {}
    for d in scored:
        metrics, _ = evaluate_split(model, tokenizer, d.task, d.parts["eval"], settings)
        prefix = f"{d.spec.name}_" if len(scored) > 1 else ""
        out.update({prefix + key: metrics[key] for key in ("accuracy", "macro_f1", "perplexity") if key in metrics})
    return out


def calibrated(model, tokenizer, task: Task, dev_rows: list[dict], predictions: list[dict], settings: Settings,
               track: Track) -> dict[str, Any]:
    """Refit the predictions' decisions with offsets fitted on the dev rows (see calibrate.py); returns the
    offsets and the dev size."""
    dev = score_choices(model, tokenizer, task, dev_rows, settings.max_length, settings.batch_size, track)
    offsets = calibrate.fit_offsets([p["loglik"] for p in dev], [p["gold"] for p in dev], task.labels())
    for p, label in zip(predictions, calibrate.predict([p["loglik"] for p in predictions], offsets, task.labels())):
        p["prediction"] = label
    return {"offsets": offsets, "dev_items": len(dev)}


def comparisons(task: Task, rows: list[dict], predictions: dict[str, list[dict]], majority: dict | None,
                seed: int) -> dict[str, Any]:
    """Paired tests on the same items: tuned vs base, and each model vs the majority baseline (choice tasks: exact
    McNemar and a paired bootstrap of macro-F1; perplexity: a paired bootstrap of the ratio)."""
    out: dict[str, Any] = {}
    if not task.choices:
        if {"base", "tuned"} <= set(predictions):
            base, tuned = predictions["base"], predictions["tuned"]
            out["tuned_vs_base"] = stats.paired_perplexity([p["loglik"] for p in base], [p["loglik"] for p in tuned],
                                                           [p["tokens"] for p in base], seed)
        return out
    gold = [task.gold(r) for r in rows]
    runs = {name: [p["prediction"] for p in preds] for name, preds in predictions.items()}
    final = "tuned" if "tuned" in runs else "base"
    if majority is not None:
        runs["majority"] = [majority["label"]] * len(rows)
        majority["ci"] = stats.classification_intervals(gold, runs["majority"], task.labels(), seed)
    for second, first in (("tuned", "base"), (final, "majority"), ("base", "majority")):
        if first in runs and second in runs:
            out[f"{second}_vs_{first}"] = stats.paired(gold, runs[first], runs[second], task.labels(), seed)
    return out


def before_and_after(model, tokenizer, dataset, settings: Settings,
                     track_for: Callable[[str], Track] | None = None, base_model=None,
                     trained: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(one evaluation of eval_results.json, predictions.jsonl's rows) for one dataset's test split: the base model
    (an adapter disabled: the same weights in memory, no second load; or `base_model`, the pretrained weights a full
    fine-tune started from) and the tuned model on the same items, and sample generations from both under the same
    seeds. A model alone is "tuned" when it was trained (from scratch), "base" when it was not. With `calibrate`,
    each model decides with offsets fitted on the dev rows."""
    track_for = track_for or (lambda name: _no_track)
    task, spec, parts = dataset.task, dataset.spec, dataset.parts
    rows = parts["test"]
    result: dict[str, Any] = {"name": spec.name, "task": task.name, "n": len(rows), "models": {}}
    if "prompt_style" in task.options:
        result["prompt_style"] = spec.prompt_style
    if task.choices:
        result["labels"] = task.labels()
    predictions: dict[str, list] = {}
    samples = task.samples(rows, settings.num_samples, settings.seed, settings.sample_prompts)
    prompts = [encode.prompt_ids(tokenizer, s.pop("input")) for s in samples]
    temperature = 0.0 if task.choices else 0.7  # greedy where the decision is the argmax; free text loops greedily
    prefix = f"{spec.name} " if spec.name != task.name else ""

    def run(name: str, model) -> None:
        metrics, predictions[name] = evaluate_split(model, tokenizer, task, rows, settings, track_for(prefix + name))
        if task.choices and (spec.calibration_file or (spec.calibrate and parts["eval"])):
            if spec.calibration_file:  # fitted by `medsft cv` on out-of-fold predictions
                record = {"offsets": calibrate.offsets_from(spec.calibration_file, name), "source": spec.calibration_file}
                for p, label in zip(predictions[name], calibrate.predict([p["loglik"] for p in predictions[name]], record["offsets"], task.labels())):
                    p["prediction"] = label
            else:
                record = calibrated(model, tokenizer, task, parts["eval"], predictions[name], settings, track_for(f"{prefix}{name} dev"))
            record["argmax"] = {k: metrics[k] for k in ("accuracy", "macro_f1")}  # evaluate_split's, before the refit
            metrics = classification_metrics([p["gold"] for p in predictions[name]], [p["prediction"] for p in predictions[name]], task.labels())
            metrics["calibration"] = record
        if task.choices and rows:
            gold, predicted = [p["gold"] for p in predictions[name]], [p["prediction"] for p in predictions[name]]
            metrics["ci"] = stats.classification_intervals(gold, predicted, task.labels(), settings.seed)
        result["models"][name] = metrics
        texts = generate(model, tokenizer, prompts, settings.sample_max_new_tokens, temperature, seed=settings.seed,
                         max_length=settings.max_length)
        for sample, text in zip(samples, texts):
            sample[name] = text

    was_training = model.training
    model.eval()
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            run("base", model)
        run("tuned", model)
    elif base_model is not None:
        run("base", base_model.eval())
        run("tuned", model)
    else:
        run("tuned" if trained else "base", model)
    model.train(was_training)
    if task.choices:
        result["majority_baseline"] = majority_baseline([task.gold(r) for r in parts["train"]], [task.gold(r) for r in rows], task.labels())
    if rows:
        result["tests"] = comparisons(task, rows, predictions, result.get("majority_baseline"), settings.seed)
    result["samples"] = samples
    rows_out = []
    for i, row in enumerate(next(iter(predictions.values()), [])):
        item = {"id": row["id"], "gold": row["gold"]}
        for name, preds in predictions.items():
            item[f"{name}_prediction"], item[f"{name}_loglik"] = preds[i]["prediction"], preds[i]["loglik"]
        rows_out.append(item)
    return result, rows_out
