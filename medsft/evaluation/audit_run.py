"""A run's memorization audit (`medsft audit RUN`, or `audit: true` after training): on up to N of its training rows
(by the ids it recorded) and as many of its held-out rows (dev and test, never trained on), both sampled under the
seed: extraction (the share of rows whose first K tokens lead greedy decoding to their next M, trained and
held-out), membership inference (loss, zlib and Min-K% AUCs), and each inserted canary's exposure by repeat count
(memorization.py, exposure.py). One dict, written as audit.json; the verdict says whether anything measured is
above what the held-out rows and chance give."""

from __future__ import annotations

import random
from typing import Any

from medsft.data import canaries
from medsft.data.encoding import Encoder
from medsft.evaluation import exposure, memorization
from medsft.evaluation.sharing import no_track

ROWS, PREFIX, SUFFIX = 1000, 32, 32


def _sampled(datasets, roles: tuple[str, ...], n: int, seed: int) -> list[tuple[str, str, Any, Any]]:
    """Up to n (dataset, id, row, task) of the given roles, the canaries' own rows left out, drawn under `seed`."""
    found = [(d.spec.name, r["id"], r, d.task) for d in datasets if d.spec.name != canaries.NAME
             for role in roles for r in d.parts.get(role, [])]
    return random.Random(seed).sample(found, min(n, len(found)))


def _encoded(encoder: Encoder, rows) -> tuple[list[dict], list[str], list[str]]:
    """Each row as training tokenized it (its first piece), its trained text, its id (dataset/id with several)."""
    out, texts, ids = [], [], []
    several = len({name for name, *_ in rows}) > 1
    for name, row_id, row, task in rows:
        example = task.example(row)
        pieces = encoder(example)[0] if example is not None else []
        if not pieces:
            continue
        piece = pieces[0]
        out.append(piece)
        trained = [t for t, label in zip(piece["input_ids"], piece["labels"]) if label != -100]
        texts.append(encoder.tokenizer.decode(trained))
        ids.append(f"{name}/{row_id}" if several else row_id)
    return out, texts, ids


def audit(recipe, model, tokenizer, datasets, planted: list[canaries.Canary], digits: int, rows: int = ROWS,
          prefix: int = PREFIX, suffix: int = SUFFIX, seed: int = 0, candidates: int = exposure.CANDIDATES,
          track_for=None) -> dict[str, Any]:
    track_for = track_for or (lambda name, unit="batches": no_track)
    args = recipe.training
    encoder = Encoder(tokenizer, args.max_length, args.completion_only_loss is not False, args.assistant_only_loss)
    trained, trained_texts, trained_ids = _encoded(encoder, _sampled(datasets, ("train",), rows, seed))
    held, held_texts, _ = _encoded(encoder, _sampled(datasets, ("eval", "test"), rows, seed))
    sequences = lambda group: [r["input_ids"] for r in group]  # noqa: E731
    flags = memorization.extractable(model, tokenizer, sequences(trained), prefix, suffix, track_for("extraction, trained"))
    held_flags = memorization.extractable(model, tokenizer, sequences(held), prefix, suffix, track_for("extraction, held-out"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    member = memorization.scores(memorization.trained_logprobs(model, trained, pad, track_for("loss, trained")), trained_texts)
    other = memorization.scores(memorization.trained_logprobs(model, held, pad, track_for("loss, held-out")), held_texts)
    extraction = memorization.share(flags, seed)
    held_out = memorization.share(held_flags, seed)
    found = {
        "rows": {"trained": len(trained), "heldout": len(held)}, "prefix": prefix, "suffix": suffix, "seed": seed,
        "extraction": {**extraction, "extractable_ids": [i for i, f in zip(trained_ids, flags) if f],
                       "heldout_share": held_out["share"], "heldout_ci": held_out["ci"], "heldout_compared": held_out["compared"]},
        "membership": {f"{kind}_auc": memorization.auc_with_interval(member[kind], other[kind], seed)
                       for kind in ("loss", "zlib", "mink")},
        "canaries": exposure.measured(model, tokenizer, planted, digits, candidates, seed, track_for("canaries", "sequences"))
        if planted else [],
    }
    found["verdict"] = verdict(found)
    return found


def verdict(found: dict) -> str:
    """One line: what the model gives back beyond what held-out rows and chance give, or that nothing is measured."""
    said = []
    e = found["extraction"]
    if e["ci"] is not None and e["heldout_share"] is not None and e["ci"][0] > e["heldout_share"]:
        said.append(f"{e['share'] * 100:.1f}% of trained rows extractable (held-out {e['heldout_share'] * 100:.1f}%)")
    for kind, v in found["membership"].items():
        if v["ci"] is not None and v["ci"][0] > 0.5:
            said.append(f"membership {kind.removesuffix('_auc')} AUC {v['value']:.2f} (above 0.5)")
    exposed = [c for c in found["canaries"] if c["exposure"] >= c["max_exposure"] / 2]
    if exposed:
        worst = max(exposed, key=lambda c: c["exposure"])
        said.append(f"{len(exposed)} of {len(found['canaries'])} canaries exposed (up to {worst['exposure']:.1f} bits, "
                    f"inserted {worst['repeats']} times)")
    if said:
        return "the model gives back its training data: " + "; ".join(said)
    return "no memorization measured beyond held-out rows and chance at this sample size"
