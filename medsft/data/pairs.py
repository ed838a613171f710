"""Preference data as the preference trainers take it, tokenized by medsft: TRL's `prompt_ids` / `chosen_ids` /
`rejected_ids` (DPO, ORPO) or `prompt_ids` / `completion_ids` / `label` (KTO). Each answer's tokens are exactly the
ones SFT trains for it (spans.py: rendered with its prompt by the chat template or as one text, through the
end-of-turn token or EOS); a long prompt is shortened alike for both answers (prompts.alike). Where a tokenizer
spells the prompt's last characters differently before the two answers, the tokens they differ in go with each
answer, as TRL does. A pair whose answers cannot fit max_length is dropped and counted."""

from __future__ import annotations

import random
from dataclasses import dataclass

from medsft.data import spans
from medsft.data.encoding import Encoder
from medsft.data.prompts import alike
from medsft.errors import UserError


@dataclass
class PairStats:
    rows: int = 0  # source rows read
    pairs: int = 0  # pairs (or unpaired completions) kept
    dropped: int = 0  # answers that cannot fit max_length with any of their prompt
    truncated: int = 0  # prompts shortened to fit
    desirable: int = 0  # KTO: completions labelled desirable


def tokenized_pair(encoder: Encoder, chosen, rejected) -> tuple[dict | None, bool]:
    """({prompt_ids, chosen_ids, rejected_ids} or None when they cannot fit, whether the prompt was shortened)."""
    whole = [encoder.span(e, fit=False)[0] for e in (chosen, rejected)]
    c, r = alike([chosen, rejected], encoder)
    if encoder.max_length is not None and max(len(c.ids[: c.end]), len(r.ids[: r.end])) > encoder.max_length:
        return None, False
    k = spans.common_prefix(c.ids[: c.start], r.ids[: r.start])
    shortened = len(c.ids) < len(whole[0].ids) or len(r.ids) < len(whole[1].ids)
    return {"prompt_ids": c.ids[:k], "chosen_ids": c.ids[k : c.end], "rejected_ids": r.ids[k : r.end]}, shortened


def tokenized_completion(encoder: Encoder, example, desirable: bool) -> tuple[dict | None, bool]:
    """({prompt_ids, completion_ids, label} or None when it cannot fit, whether the prompt was shortened)."""
    span, status = encoder.span(example)
    if span is None:
        return None, False
    return {"prompt_ids": span.ids[: span.start], "completion_ids": span.ids[span.start : span.end],
            "label": desirable}, status == "truncated"


def preference_rows(datasets: list, role: str, encoder: Encoder, seed: int, paired: bool = True):
    """(the rows as the trainer takes them, PairStats) of every dataset's `role` rows (training rows by weight, as
    SFT's): pairs, or unpaired completions (`paired` False); each dataset's `pairs` key says all other options or one
    drawn (per row, under `seed`)."""
    from medsft.data.datasets import needs_chat_template, weighted

    out, stats = [], PairStats()
    for d in datasets:
        rows = weighted(d.parts[role], d.spec.weight, d.spec.split_seed) if role == "train" else d.parts[role]
        everyone = (d.spec.pairs or "all") == "all"
        for n, row in enumerate(rows):
            stats.rows += 1
            rng = random.Random(f"{seed}:{d.spec.name}:{row['id']}")  # the same draw whatever the order
            built = d.task.pairs(row, everyone, rng) if paired else d.task.unpaired(row, everyone, rng)
            if n == 0 and needs_chat_template([item[0] for item in built]) and not getattr(encoder.tokenizer, "chat_template", None):
                raise UserError(f"dataset {d.spec.name} is conversational and this tokenizer has no chat template; set "
                                "chat_template_path")
            for item in built:
                tokens, shortened = tokenized_pair(encoder, *item) if paired else tokenized_completion(encoder, *item)
                if tokens is None:
                    stats.dropped += 1
                    continue
                out.append({"id": f"{d.spec.name}/{row['id']}", **tokens})
                stats.pairs += 1
                stats.truncated += shortened
                stats.desirable += bool(tokens.get("label"))
    return out, stats
