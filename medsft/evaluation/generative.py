"""Choice items scored by what the model says (`scoring: generate`): each item's reply generated after the prompt
training trains its answer after (the same tokens, shortened as training shortens them), in batches, and read by the
task (tasks/answers.py): strict, lenient or unparseable, never mapped to an option. With several sampled replies an
item's majority answer is scored too (maj@k). The replies are shared out among processes like the likelihoods."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from medsft.data import encoding
from medsft.evaluation import stats
from medsft.evaluation.metrics import classification_metrics
from medsft.generation.sampling import stop_ids
from medsft.tasks import Task


@dataclass
class Generation:
    max_new_tokens: int = 32
    num_samples: int = 1  # replies per item; above 1, sampled at `temperature`, the majority is scored too
    temperature: float = 0.0
    top_p: float = 1.0


def answer_prompt(encoder: encoding.Encoder, task: Task, row: dict) -> list[int]:
    """The ids a reply to the row is generated after: the tokens before the answer where training puts it (chat
    template, Qwen3's empty think block, a plain prompt's cue), shortened as training shortens the prompt of its
    longest choice: the same prompt the choices' likelihoods are scored after. The reply may run past max_length,
    which bounds what training holds, not the model's context."""
    from medsft.evaluation.scoring import choice_spans

    first = choice_spans(encoder, task, row)[0]
    return first.ids[: first.start]


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    return next((ids[:i] for i, t in enumerate(ids) if t in stops), ids)


@torch.no_grad()
def replies(model, tokenizer, prompts: list[list[int]], generation: Generation, batch_size: int, seed: int = 0,
            track=None) -> list[list[str]]:
    """`generation.num_samples` replies to each prompt (token ids), batched by length and left-padded; greedy at
    temperature 0. Each batch samples under seed + its index: the same replies on every run of the same batches."""
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import GenerationConfig

    from medsft.evaluation.scoring import no_track, rank_batches
    from medsft.models.sharding import sharded

    device = model.get_input_embeddings().weight.device  # the first of several under a device_map
    stops = stop_ids(tokenizer, model)
    sampling = generation.temperature > 0
    config = GenerationConfig(max_new_tokens=generation.max_new_tokens, do_sample=sampling,
                              temperature=generation.temperature if sampling else None,
                              top_p=generation.top_p if sampling else None, top_k=None,
                              num_return_sequences=generation.num_samples, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=stops)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mine, out = rank_batches(batches), {}
    synced = sharded(model)  # ZeRO-3 or FSDP: every rank steps while any generates
    for j, chunk in (track or no_track)(mine, len(mine)):
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            attention[row, width - len(prompts[i]) :] = 1
        torch.manual_seed(seed + max(j, 0))
        generated = model.generate(input_ids=ids.to(device), attention_mask=attention.to(device), generation_config=config,
                                   synced_gpus=synced)[:, width:].tolist()
        if j < 0:
            continue
        for row, i in enumerate(chunk):
            drawn = generated[row * generation.num_samples : (row + 1) * generation.num_samples]
            out[i] = [tokenizer.decode(_until_stop(d, set(stops)), skip_special_tokens=True) for d in drawn]
    if PartialState().num_processes > 1:
        out = {i: v for part in gather_object([out]) for i, v in part.items()}
    return [out[i] for i in range(len(prompts))]


def _majority(answers: list[str | None]) -> str | None:
    """The answer most replies state (the earliest of a tie); None when none states one."""
    stated = [a for a in answers if a is not None]
    return Counter(stated).most_common(1)[0][0] if stated else None


def score_generated(model, tokenizer, task: Task, rows: list[dict], max_length: int | None, batch_size: int,
                    generation: Generation, seed: int = 0, track=None) -> list[dict[str, Any]]:
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
