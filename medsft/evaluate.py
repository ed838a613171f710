"""Evaluation: PubMedQA choice log-likelihoods and metrics, report perplexity. Returns data; report.py renders it."""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from medsft import calibrate, data
from medsft.config import MedsftArguments
from medsft.generate import CLINICAL_OPENINGS, generate
from medsft.metrics import classification_metrics, majority_baseline
from medsft.tasks import pubmedqa
from medsft.tasks.pubmedqa import CHOICES

# track(batches, total) -> batches: how a caller shows progress (rich's track, a test's counter); identity by default.
Track = Callable[[Iterable, int], Iterable]


def _no_track(batches: Iterable, total: int) -> Iterable:
    return batches


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _prompt_ids(row: dict, args: MedsftArguments, tokenizer, room: int | None) -> list[int]:
    """The PubMedQA prompt (the function training's format_row uses), cut from the left as training cuts it; the
    row may lack a decision (a question asked through generate or the server)."""
    ids = tokenizer(pubmedqa.prompt(row, args.prompt_style))["input_ids"]
    return ids if room is None else data.truncate_left(ids, room, tokenizer.bos_token_id)


@torch.no_grad()
def _log_probs(model, sequences: list[list[int]], positions: list[list[int]], pad_id: int, batch_size: int,
               track: Track = _no_track):
    """Yield (i, next-token log-probabilities at positions[i] of sequences[i]), shape (len(positions[i]), vocab).

    Sequences are batched by length and right-padded, so positions need no shifting; the LM head runs only on the
    requested positions (`logits_to_keep` as a boolean mask)."""
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for chunk in track(_batches(order, batch_size), math.ceil(len(order) / batch_size)):
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for row, i in enumerate(chunk):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            attention[row, : len(sequences[i])] = 1
            keep[row, positions[i]] = True
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), logits_to_keep=keep.to(device)).logits
        log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
        k = 0
        for i in chunk:  # kept rows come out in (row, position) order
            n = len(positions[i])
            yield i, log_probs[k : k + n]
            k += n


def _continuation_logliks(model, sequences: list[list[int]], n_last: list[int], pad_id: int, batch_size: int,
                          track: Track = _no_track) -> list[float]:
    """Summed log-probability of the last n_last[i] tokens of each sequence given what precedes them."""
    positions = [list(range(len(s) - n - 1, len(s) - 1)) for s, n in zip(sequences, n_last)]
    out = [0.0] * len(sequences)
    for i, lp in _log_probs(model, sequences, positions, pad_id, batch_size, track):
        targets = torch.tensor(sequences[i][len(sequences[i]) - n_last[i] :])
        out[i] = lp.gather(-1, targets.unsqueeze(-1)).sum().item()
    return out


def score_pubmedqa(model, tokenizer, rows: list[dict], args: MedsftArguments, max_length: int | None, batch_size: int = 8,
                   track: Track = _no_track) -> list[dict[str, Any]]:
    """Per item: id, gold, prediction (argmax of summed log-likelihood) and each choice's log-likelihood.

    Each choice is scored after the prompt with a leading space, as lm-evaluation-harness does. When every choice
    is one token (SmolLM2, GPT-2), one forward pass per prompt scores all three from the same next-token
    distribution; otherwise each choice is its own sequence."""
    choice_ids = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in CHOICES]
    longest = max(map(len, choice_ids))
    prompts = [_prompt_ids(r, args, tokenizer, None if max_length is None else max_length - longest) for r in rows]
    pad = tokenizer.pad_token_id
    if longest == 1:
        scores: list[list[float]] = [[] for _ in prompts]
        last = [[len(p) - 1] for p in prompts]
        for i, lp in _log_probs(model, prompts, last, pad, batch_size, track):
            scores[i] = lp[0, [c[0] for c in choice_ids]].tolist()
    else:
        sequences = [p + c for p in prompts for c in choice_ids]
        flat = _continuation_logliks(model, sequences, [len(c) for _ in prompts for c in choice_ids], pad, batch_size, track)
        scores = [flat[i * len(CHOICES) : (i + 1) * len(CHOICES)] for i in range(len(prompts))]
    results = []
    for row, s in zip(rows, scores):
        best = max(range(len(CHOICES)), key=lambda j: s[j])
        results.append({"id": row["id"], "gold": row.get("final_decision"), "prediction": CHOICES[best], "loglik": dict(zip(CHOICES, s))})
    return results


def perplexity(model, tokenizer, rows: list[dict], args: MedsftArguments, max_length: int | None, batch_size: int = 4,
               track: Track = _no_track) -> float:
    """Token-weighted perplexity of the completions (EOS included) given their prompts."""
    sequences, n_last = [], []
    for row in rows:
        example = data.format_row(row, args)
        if example is None:
            continue
        encoded, status = data.encode_example(example, tokenizer, max_length, lm=data.is_language_modelling(args))
        if status != "dropped":
            sequences.append(encoded["input_ids"])
            n_last.append(min(sum(encoded["completion_mask"]), len(encoded["input_ids"]) - 1))
    scores = _continuation_logliks(model, sequences, n_last, tokenizer.pad_token_id, batch_size, track)
    return math.exp(-sum(scores) / max(sum(n_last), 1))


def evaluate_split(model, tokenizer, rows: list[dict], args: MedsftArguments, max_length: int | None, batch_size: int = 8,
                   track: Track = _no_track) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics for the model as it is, and its predictions (one dict per item)."""
    if args.task == "pubmedqa":
        predictions = score_pubmedqa(model, tokenizer, rows, args, max_length, batch_size, track)
        gold = [p["gold"] for p in predictions]
        return classification_metrics(gold, [p["prediction"] for p in predictions]), predictions
    return {"perplexity": perplexity(model, tokenizer, rows, args, max_length, batch_size, track)}, []


def sample_prompts(rows: list[dict], args: MedsftArguments, seed: int) -> list[dict[str, str]]:
    """[{prompt, gold?}]: the recipe's prompts, else clinical openings for whole-note reports, else a stratified
    handful of test items with their reference answer."""
    if args.num_samples <= 0:
        return []
    if args.sample_prompts:
        return [{"prompt": p} for p in args.sample_prompts[: args.num_samples]]
    if data.is_language_modelling(args):
        return [{"prompt": p} for p in CLINICAL_OPENINGS[: args.num_samples]]
    examples = [data.format_row(r, args) for r in data.stratified_sample(rows, args.num_samples, seed)]
    return [{"prompt": e["prompt"], "gold": e["completion"]} for e in examples if e]


def calibrated(model, tokenizer, dev_rows: list[dict], predictions: list[dict], args: MedsftArguments,
               max_length: int | None, batch_size: int, track: Track) -> dict[str, Any]:
    """Refit the predictions' decisions with offsets fitted on the dev rows (see calibrate.py); returns the
    offsets and the dev size."""
    dev = score_pubmedqa(model, tokenizer, dev_rows, args, max_length, batch_size, track)
    offsets = calibrate.fit_offsets([p["loglik"] for p in dev], [p["gold"] for p in dev])
    for p, label in zip(predictions, calibrate.predict([p["loglik"] for p in predictions], offsets)):
        p["prediction"] = label
    return {"offsets": offsets, "dev_items": len(dev)}


def before_and_after(model, tokenizer, rows: list[dict], train_rows: list[dict], args: MedsftArguments,
                     max_length: int | None, batch_size: int = 8, seed: int = 0,
                     track_for: Callable[[str], Track] | None = None,
                     dev_rows: list[dict] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(eval_results.json's content, predictions.jsonl's rows): the base model (the adapter disabled: the same
    weights in memory, no second load) and the tuned model on the same items, and sample generations from both
    under the same seeds. Without an adapter: "base" alone. With `calibrate` (PubMedQA), each model's decisions
    use offsets fitted on dev_rows."""
    track_for = track_for or (lambda name: _no_track)
    results: dict[str, Any] = {"task": args.task, "n": len(rows), "prompt_style": args.prompt_style, "models": {}}
    predictions: dict[str, list] = {}
    samples = sample_prompts(rows, args, seed)
    # Greedy for PubMedQA, where the decision is the argmax; seeded sampling for free text, which greedy loops.
    temperature = 0.0 if args.task == "pubmedqa" else 0.7

    def run(name: str) -> None:
        metrics, predictions[name] = evaluate_split(model, tokenizer, rows, args, max_length, batch_size, track_for(name))
        if args.task == "pubmedqa" and args.calibrate and dev_rows:
            record = calibrated(model, tokenizer, dev_rows, predictions[name], args, max_length, batch_size, track_for(f"{name} dev"))
            record["argmax"] = {k: metrics[k] for k in ("accuracy", "macro_f1")}  # evaluate_split's, before the refit
            metrics = classification_metrics([p["gold"] for p in predictions[name]], [p["prediction"] for p in predictions[name]])
            metrics["calibration"] = record
        results["models"][name] = metrics
        texts = generate(model, tokenizer, [s["prompt"] for s in samples], args.sample_max_new_tokens, temperature,
                         seed=seed, max_length=max_length)
        for sample, text in zip(samples, texts):
            sample[name] = text

    was_training = model.training
    model.eval()
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            run("base")
        run("tuned")
    else:
        run("base")
    model.train(was_training)
    if args.task == "pubmedqa":
        results["majority_baseline"] = majority_baseline(train_rows, [r["final_decision"] for r in rows])
    results["samples"] = samples
    rows_out = []
    for i, row in enumerate(predictions.get("base", [])):
        item = {"id": row["id"], "gold": row["gold"]}
        for name, preds in predictions.items():
            item[f"{name}_prediction"], item[f"{name}_loglik"] = preds[i]["prediction"], preds[i]["loglik"]
        rows_out.append(item)
    return results, rows_out
