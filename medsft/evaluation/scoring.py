"""Scoring: the log-likelihood of each choice after the prompt (lm-evaluation-harness's method, on the tokens training
trains as the answer) and the perplexity of the tokens training trains, batched by length, the LM head run only on
the positions scored, shared out among processes with the same numbers as one (sharing.py); a split's metrics, and
the dev metrics logged at each evaluation."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from medsft.data import encoding, spans
from medsft.data.prompts import choice_spans
from medsft.evaluation import generative, pairwise, stats
from medsft.evaluation.metrics import classification_metrics
from medsft.evaluation.sharing import Track, no_track
from medsft.evaluation.targets import scored_targets, token_logliks
from medsft.tasks import Task

@dataclass
class Settings:
    max_length: int | None = None
    batch_size: int = 8
    seed: int = 0
    sample_count: int = 3
    sample_prompts: list[str] | None = None
    sample_max_new_tokens: int = 64
    scoring: str = "likelihood"  # how a choice item is decided: likelihood, or generate (the reply's answer)
    generation: generative.Generation = field(default_factory=generative.Generation)


def modes(scoring: str) -> list[str]:
    """The scorings a recipe's `scoring` runs, in the order they are reported."""
    return ["likelihood", "generate"] if scoring == "both" else [scoring]


def precision(args) -> str:
    """What scoring computes in, everywhere a run is scored (the test split, the dev folds of `cv`, the dev metrics
    during training): the recipe's mixed precision as autocast (bf16, or fp16 where the GPU lacks bf16), else float32."""
    return "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"


@contextmanager
def autocast(args, device: str):
    """Scoring under the run's precision (precision()); yields its name, to be recorded beside the numbers."""
    name = precision(args)
    with torch.autocast(device, dtype=getattr(torch, name), enabled=name != "float32"):
        yield name


def _one_position(choices: list[spans.Span]) -> bool:
    """Every choice one token after one and the same prompt: one forward pass scores them all."""
    first = choices[0]
    return first.start > 0 and all(s.stop - s.start == 1 and s.ids[: s.start] == first.ids[: first.start] for s in choices)


def score_choices(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int = 8,
                  track: Track = no_track) -> list[dict[str, Any]]:
    """Per item: id, gold, prediction (argmax of summed log-likelihood) and each choice's log-likelihood.

    Each choice is scored on the tokens that spell it where training puts the answer, after the prompt training
    trains it after (choice_spans): " yes" after a plain prompt, the assistant's "yes" after a chat template's
    generation prompt and whatever the template writes before the reply. When every choice of an item is one token
    after the same prompt, one forward pass scores all of them; otherwise each choice is its own sequence."""
    encoder = encoding.Encoder(tokenizer, max_length)
    labels = [task.row_labels(r) for r in rows]
    sequences, targets, shared = [], [], []
    for row in rows:
        choices = choice_spans(encoder, task, row)
        if _one_position(choices):  # every choice's token from the one next-token distribution
            s = choices[0]
            sequences.append(s.ids[: s.start])
            targets.append([(s.start - 1, c.ids[c.start]) for c in choices])
            shared.append(True)
            continue
        for s in choices:
            first = max(s.start, 1)  # a first token has nothing before it to be predicted from
            sequences.append(s.ids[: s.stop])
            targets.append([(t - 1, s.ids[t]) for t in range(first, s.stop)])
            shared.append(False)
    values = iter(zip(shared, scored_targets(model, sequences, targets, tokenizer.pad_token_id, batch_size, track)))
    results = []
    for row, ls in zip(rows, labels):
        one, first = next(values)
        s = first if one else [sum(first)] + [sum(next(values)[1]) for _ in ls[1:]]
        best = max(range(len(ls)), key=lambda j: s[j])
        results.append({"id": row["id"], "gold": task.gold(row), "prediction": ls[best], "loglik": dict(zip(ls, s))})
    return results


def item_logliks(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int = 4,
                 track: Track = no_track) -> tuple[list[float], list[int]]:
    """Per row: the summed log-likelihood of its trained tokens (completions, assistant turns, whole texts; EOS
    included), tokenized exactly as training tokenizes it, and how many tokens that is."""
    encoder = encoding.Encoder(tokenizer, max_length)
    sequences, targets, owner = [], [], []
    for i, row in enumerate(rows):
        example = task.example(row)
        for piece in (encoder(example)[0] if example is not None else []):
            trained = [t for t, label in enumerate(piece["labels"]) if label != encoding.IGNORE and t > 0]
            if trained:
                sequences.append(piece["input_ids"])
                targets.append(trained)
                owner.append(i)
    scores = token_logliks(model, sequences, targets, tokenizer.pad_token_id, batch_size, track)
    logliks, tokens = [0.0] * len(rows), [0] * len(rows)
    for i, score, target in zip(owner, scores, targets):
        logliks[i] += score
        tokens[i] += len(target)
    return logliks, tokens


def perplexity(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int = 4,
               track: Track = no_track) -> float:
    """Token-weighted perplexity of the rows' trained tokens."""
    logliks, tokens = item_logliks(model, tokenizer, task, rows, max_length, batch_size, track)
    return math.exp(-sum(logliks) / max(sum(tokens), 1))


def perplexity_metrics(logliks: list[float], tokens: list[int], seed: int) -> dict[str, Any]:
    """Token-weighted perplexity of the items' trained tokens, with its bootstrap interval where there are items."""
    metrics: dict[str, Any] = {"perplexity": math.exp(-sum(logliks) / max(sum(tokens), 1))}
    if logliks:
        metrics["ci"] = {"perplexity": stats.perplexity_interval(logliks, tokens, seed)}
    return metrics


def evaluate_split(model, tokenizer, task: Task, rows: list[dict], settings: Settings,
                   track: Track = no_track) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics for the model as it is, and its predictions (one dict per item; none for perplexity), the items
    shared out among the processes; a choice task decided by likelihood or, with settings.scoring "generate", by the
    answer its reply states."""
    if task.choices and settings.scoring == "generate":
        predictions = generative.score_generated(model, tokenizer, task, rows, settings.max_length, settings.batch_size,
                                                 settings.generation, settings.seed, track)
        return generative.generated_metrics(predictions, task.labels(), settings.seed), predictions
    if task.choices:
        predictions = score_choices(model, tokenizer, task, rows, settings.max_length, settings.batch_size, track)
        gold, predicted = [p["gold"] for p in predictions], [p["prediction"] for p in predictions]
        return classification_metrics(gold, predicted, task.labels()), predictions
    logliks, tokens = item_logliks(model, tokenizer, task, rows, settings.max_length, settings.batch_size, track)
    metrics = perplexity_metrics(logliks, tokens, settings.seed)
    predictions = [{"id": r["id"], "gold": None, "prediction": None, "loglik": ll, "tokens": n}
                   for r, ll, n in zip(rows, logliks, tokens)]
    if task.pairwise and rows:  # preference data: its held-out pairs too
        pairs = pairwise.pair_logliks(model, tokenizer, task, rows, settings.max_length, settings.batch_size, track)
        found = pairwise.pair_metrics(pairs, settings.seed)
        metrics.update({k: v for k, v in found.items() if k != "ci"})
        metrics["ci"].update(found.get("ci", {}))
        for prediction, row_pairs in zip(predictions, pairs):
            prediction["pairs"] = row_pairs
    return metrics, predictions


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
