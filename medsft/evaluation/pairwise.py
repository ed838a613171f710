"""Held-out preference pairs scored (a task whose rows are pairs: task: preference): each model's log-likelihood of
the chosen and of the rejected answer, on exactly the tokens DPO compares (data/pairs.py); the share of pairs whose
chosen answer it finds likelier (preference accuracy) and the mean margin. Between two models scored on the same
pairs (tuned against its start, or its base): DPO's implicit reward over beta, log(tuned / start) of the chosen
answer less that of the rejected one: the share of pairs where it prefers the chosen answer (reward accuracy) and
its mean (reward margin). Each with a 95% bootstrap interval over pairs."""

from __future__ import annotations

import random
from typing import Any

from medsft.data.encoding import Encoder
from medsft.data.pairs import tokenized_pair
from medsft.evaluation import stats
from medsft.evaluation.sharing import Track, no_track
from medsft.evaluation.targets import scored_targets


def pair_logliks(model, tokenizer, task, rows: list[dict], max_length: int | None, batch_size: int,
                 track: Track = no_track) -> list[list[list[float]]]:
    """Per row: [log p(chosen), log p(rejected)] of each of its pairs that fits max_length."""
    encoder = Encoder(tokenizer, max_length)
    sequences, targets, owner = [], [], []
    for i, row in enumerate(rows):
        for chosen, rejected in task.pairs(row, True, random.Random(0)):
            pair, _ = tokenized_pair(encoder, chosen, rejected)
            if pair is None:
                continue
            start = len(pair["prompt_ids"])
            for side in ("chosen_ids", "rejected_ids"):
                ids = pair["prompt_ids"] + pair[side]
                sequences.append(ids)
                targets.append([(t - 1, ids[t]) for t in range(max(start, 1), len(ids))])
            owner.append(i)
    values = [sum(v) for v in scored_targets(model, sequences, targets, tokenizer.pad_token_id, batch_size, track)]
    out: list[list[list[float]]] = [[] for _ in rows]
    for k, i in enumerate(owner):
        out[i].append([values[2 * k], values[2 * k + 1]])
    return out


def pair_metrics(pairs: list[list[list[float]]], seed: int) -> dict[str, Any]:
    """preference_accuracy and preference_margin over every pair, with intervals (under "ci")."""
    flat = [p for row in pairs for p in row]
    if not flat:
        return {}
    prefers, margins = [c > r for c, r in flat], [c - r for c, r in flat]
    return {"pairs": len(flat), "preference_accuracy": sum(prefers) / len(flat), "preference_margin": sum(margins) / len(flat),
            "ci": {"preference_accuracy": stats.share_interval(prefers, seed),
                   "preference_margin": stats.mean_interval(margins, seed)}}


def reward_test(reference: list[list[list[float]]], policy: list[list[list[float]]], seed: int) -> dict[str, Any]:
    """The implicit reward of `policy` against `reference` over beta, on the same pairs: its accuracy and margin."""
    rewards = [(pc - rc) - (pr - rr) for ref_row, pol_row in zip(reference, policy)
               for (rc, rr), (pc, pr) in zip(ref_row, pol_row)]
    if not rewards:
        return {}
    wins = [r > 0 for r in rewards]
    return {"reward_accuracy": sum(wins) / len(wins), "reward_accuracy_ci": stats.share_interval(wins, seed),
            "reward_margin": sum(rewards) / len(rewards), "reward_margin_ci": stats.mean_interval(rewards, seed)}
