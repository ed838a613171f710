"""What a trained model gives back, measured on rows it trained on against rows it never saw (its dev and test rows):

- extraction (Carlini et al., "Quantifying Memorization Across Neural Language Models", 2023): a row is extractable
  when greedy decoding from its first K tokens, through the one decoding path (generation/decoder.py), reproduces
  its next M tokens exactly;
- membership inference from the loss alone, on exactly the tokens training trained: the loss, the loss over the
  text's zlib entropy (Carlini et al. 2021), and Min-K% Prob (Shi et al. 2023: the mean of the k% least likely
  tokens' log-probabilities, k = 20%), each scored by the AUC with which it separates trained from held-out rows,
  with a bootstrap interval.

Sequences are the rows as training tokenized them (encoding.Encoder): ids, and which are trained."""

from __future__ import annotations

import math
import zlib

import numpy as np

from medsft.evaluation.sharing import Track, no_track
from medsft.evaluation.stats import share_interval
from medsft.evaluation.targets import scored_targets

MIN_K = 0.2
RESAMPLES = 1000
BATCH = 8  # rows scored at once (whole rows, up to max_length)
# Sequences decoded at once for extraction: each is only prefix + suffix tokens long, and greedy decoding steps are
# latency-bound on a CPU, so wide batches pay: 64 rows of a 32 + 32 audit on SmolLM2-135M, 2 cores, took 194 s at 8,
# 82-105 s at 32 and 36-56 s at 64 (the same flags each time).
DECODE_BATCH = 64


def _matched(target: list[int], job, stops: list[int]) -> bool:
    """Whether the greedy continuation is the target: token for token, a stop token where the target ends in one."""
    got = job.tokens
    if len(got) >= len(target):
        return got[: len(target)] == target
    return job.finish_reason == "stop" and got == target[: len(got)] and target[len(got)] in stops


def extractable(model, tokenizer, sequences: list[list[int]], prefix: int, suffix: int,
                track: Track = no_track) -> list[bool | None]:
    """For each sequence: whether greedy decoding from its first `prefix` tokens gives its next `suffix`; None for
    a sequence shorter than prefix + suffix (nothing to compare)."""
    from medsft.generation.decoder import Decoder, Job

    decoder = Decoder(model, tokenizer)
    jobs = {i: Job(s[:prefix], suffix, temperature=0.0, seed=0) for i, s in enumerate(sequences) if len(s) >= prefix + suffix}
    order = sorted(jobs, key=lambda i: len(sequences[i]))
    was_training = model.training
    model.eval()
    for start in track(range(0, len(order), DECODE_BATCH), -(-len(order) // DECODE_BATCH)):
        decoder.run([jobs[i] for i in order[start : start + DECODE_BATCH]])
    model.train(was_training)
    return [_matched(s[prefix : prefix + suffix], jobs[i], decoder.stops) if i in jobs else None
            for i, s in enumerate(sequences)]


def trained_logprobs(model, rows: list[dict], pad_id: int, track: Track = no_track) -> list[list[float]]:
    """Each row's log-probabilities of the tokens it trains (labels not -100), given what precedes them."""
    pairs = [[(t - 1, row["input_ids"][t]) for t, label in enumerate(row["labels"]) if label != -100 and t > 0] for row in rows]
    return scored_targets(model, [row["input_ids"] for row in rows], pairs, pad_id, BATCH, track)


def scores(logprobs: list[list[float]], texts: list[str]) -> dict[str, list[float]]:
    """Membership scores (higher: more likely trained on) per row: minus the loss, minus the loss over the zlib
    entropy of the trained text, and Min-K% Prob."""
    out: dict[str, list[float]] = {"loss": [], "zlib": [], "mink": []}
    for values, text in zip(logprobs, texts):
        loss = -float(np.mean(values)) if values else 0.0
        entropy = len(zlib.compress(text.encode("utf-8"))) or 1
        lowest = sorted(values)[: max(1, math.ceil(MIN_K * len(values)))] if values else [0.0]
        out["loss"].append(-loss)
        out["zlib"].append(-loss / entropy)
        out["mink"].append(float(np.mean(lowest)))
    return out


def auc(members: list[float], others: list[float]) -> float:
    """The probability that a trained row scores above a held-out one (ties half): the ROC curve's area."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([members, others]))
    n1, n0 = len(members), len(others)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_with_interval(members: list[float], others: list[float], seed: int) -> dict:
    """The AUC and its 95% bootstrap interval (trained and held-out rows resampled apart)."""
    if not members or not others:
        return {"value": None, "ci": None}
    rng = np.random.default_rng(seed)
    m, o = np.asarray(members), np.asarray(others)
    draws = [auc(m[rng.integers(0, len(m), len(m))], o[rng.integers(0, len(o), len(o))]) for _ in range(RESAMPLES)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"value": auc(members, others), "ci": [float(low), float(high)]}


def share(flags: list[bool | None], seed: int) -> dict:
    """The share of compared sequences that are extractable, with its interval."""
    kept = [f for f in flags if f is not None]
    if not kept:
        return {"share": None, "ci": None, "compared": 0}
    return {"share": sum(kept) / len(kept), "ci": share_interval(kept, seed), "compared": len(kept)}
