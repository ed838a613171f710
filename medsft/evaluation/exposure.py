"""Each canary's exposure (The Secret Sharer, Carlini et al. 2019): how far the trained model ranks the inserted secret
above the other secrets of its format. exposure = log2 |R| - log2 rank, R every secret of the format (10^digits);
the rank is estimated from sampled candidates scored by the log-perplexity of their sentence (every token, as
training trained the canary): the share of candidates more likely than the secret. Where none of the sampled ones
is, the share is extrapolated from a skew-normal fitted to the candidates' log-perplexities, as Carlini et al. do;
exposure never exceeds log2 |R|."""

from __future__ import annotations

import math

import numpy as np

from medsft.data import canaries
from medsft.evaluation.sharing import Track, no_track
from medsft.evaluation.targets import token_logliks

CANDIDATES = 2000


def _perplexities(model, tokenizer, texts: list[str], track: Track) -> list[float]:
    """Minus the summed log-probability of every token of each text after its first (BOS where the tokenizer adds
    one), the tokens a text row trains."""
    sequences = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    targets = [list(range(1, len(s))) for s in sequences]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return [-v for v in token_logliks(model, sequences, targets, pad, 16, track)]


def exposure(secret: float, others: np.ndarray, digits: int) -> dict:
    """From the secret's log-perplexity and the candidates': the rank share, exposure, and how it was estimated."""
    space = digits * math.log2(10)
    below = int((others < secret).sum())
    if below > 0:
        fraction, method = (below + 1) / (len(others) + 1), "sampled"
    else:
        from scipy.stats import skewnorm

        shape, loc, scale = skewnorm.fit(others)
        fraction, method = float(skewnorm.cdf(secret, shape, loc, scale)), "extrapolated"
        fraction = max(fraction, 2.0 ** -space)
    return {"exposure": min(space, -math.log2(fraction)), "rank_share": fraction, "method": method,
            "max_exposure": space}


def measured(model, tokenizer, planted: list[canaries.Canary], digits: int, n: int = CANDIDATES, seed: int = 0,
             track: Track = no_track) -> list[dict]:
    """Each canary's exposure among `n` sampled candidates of its format."""
    out = []
    for canary in planted:
        texts = [canary.text] + [canary.candidate(s) for s in canaries.candidates(canary, digits, n, seed)]
        values = np.asarray(_perplexities(model, tokenizer, texts, track))
        out.append({"secret": canary.secret, "repeats": canary.repeats, "candidates": n,
                    "log_perplexity": float(values[0]), **exposure(float(values[0]), values[1:], digits)})
    return out


def by_repeats(found: list[dict]) -> dict[int, float]:
    """The mean exposure of the canaries inserted each number of times."""
    groups: dict[int, list[float]] = {}
    for f in found:
        groups.setdefault(f["repeats"], []).append(f["exposure"])
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}
