"""Choice items scored by what the model says (`scoring: generate`): each item's reply generated after the prompt
training trains its answer after (the same tokens, shortened as training shortens them), in batches, and read by the
task (tasks/answers.py): strict, lenient or unparseable, never mapped to an option. With several sampled replies an
item's majority answer is scored too (maj@k). The replies are decoded as every generated text is (the decoder) and
shared out among processes like the likelihoods (sharing.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from medsft.data import encoding
from medsft.data.prompts import answer_prompt
from medsft.evaluation import stats
from medsft.evaluation.metrics import classification_metrics
from medsft.evaluation.sharing import Track, by_length, no_track, run_shared
from medsft.generation.decoder import Decoder, Job
from medsft.tasks import Task


@dataclass
class Generation:
    max_new_tokens: int = 32
    num_samples: int = 1  # replies per item; above 1, sampled at `temperature`, the majority is scored too
    temperature: float = 0.0
    top_p: float = 1.0


def replies(model, tokenizer, prompts: list[list[int]], generation: Generation, batch_size: int, seed: int = 0,
            track: Track = no_track) -> list[list[str]]:
    """`generation.num_samples` replies to each prompt (token ids), decoded by the one decoding path every generated
    text takes (generation/decoder.py; greedy at temperature 0): reply k of prompt i samples under its own seed,
    seed + i * num_samples + k, so it does not depend on what it was batched with, and is the text `generate` or
    the server give for that prompt, seed and settings. Batched by length, shared out among processes (under ZeRO-3
    the decoder keeps every rank stepping while any still decodes)."""
    decoder = Decoder(model, tokenizer)
    n = generation.num_samples
    flat = [prompts[p // n] for p in range(len(prompts) * n)]  # an item's replies side by side

    def run(step: int, chunk: list[int]) -> list[str]:
        jobs = [Job(list(flat[p]), generation.max_new_tokens, generation.temperature, generation.top_p, seed=seed + p)
                for p in chunk]
        decoder.run(jobs)
        return [job.text for job in jobs]

    out = run_shared(by_length([len(p) for p in flat], batch_size * n), run, track)
    return [[out[i * n + k] for k in range(n)] for i in range(len(prompts))]


def _majority(answers: list[str | None]) -> str | None:
    """The answer most replies state (the earliest of a tie); None when none states one."""
    stated = [a for a in answers if a is not None]
    return Counter(stated).most_common(1)[0][0] if stated else None


def score_generated(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int,
                    generation: Generation, seed: int = 0, track: Track = no_track) -> list[dict[str, Any]]:
    """Per item: id, gold, prediction (the strict answer of its first reply, None when it states none), lenient,
    the reply (and with several, every reply and the majority's answer)."""
    encoder = encoding.Encoder(tokenizer, max_length)
    prompts = [answer_prompt(encoder, task, row) for row in rows]
    results = []
    for row, texts in zip(rows, replies(model, tokenizer, prompts, generation, batch_size, seed, track)):
        answers = [task.answer(row, text) for text in texts]
        item = {"id": row["id"], "gold": task.gold(row), "prediction": answers[0].strict, "lenient": answers[0].lenient,
                "reply": texts[0]}
        if len(texts) > 1:
            item.update(replies=texts, majority=_majority([a.strict for a in answers]))
        results.append(item)
    return results


def generated_metrics(predictions: list[dict], labels: list[str], seed: int) -> dict[str, Any]:
    """Strict accuracy (`accuracy`; a reply that states no option is wrong), macro-F1, per class and the confusion
    matrix on the strict answers; `accuracy_lenient`; `unparseable` (the share naming no option at all); maj@k where
    several replies were drawn; each with its 95% bootstrap interval."""
    gold = [p["gold"] for p in predictions]
    strict = [p["prediction"] or "" for p in predictions]  # "" is no label: wrong for every gold answer
    metrics = classification_metrics(gold, strict, labels)
    shares = {"accuracy_lenient": [p["lenient"] == p["gold"] for p in predictions],
              "unparseable": [p["lenient"] is None for p in predictions]}
    if predictions and "majority" in predictions[0]:
        shares[f"accuracy_maj@{len(predictions[0]['replies'])}"] = [p["majority"] == p["gold"] for p in predictions]
    metrics["ci"] = stats.classification_intervals(gold, strict, labels, seed) if predictions else {}
    for key, flags in shares.items():
        metrics[key] = sum(flags) / max(len(flags), 1)
        if predictions:
            metrics["ci"][key] = stats.share_interval(flags, seed)
    return metrics
