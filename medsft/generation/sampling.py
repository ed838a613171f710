"""The rules of generation, kept once for every generated text (generation/decoder.py): every token that ends a
reply (`stop_ids`), penalties and logit bias, and one token from a row's logits."""

from __future__ import annotations

import torch
from medsft.data import templates


def stop_ids(tokenizer, model=None) -> list[int]:
    """Every token that ends a reply: the tokenizer's EOS, the chat template's end-of-turn token (Llama-3's
    <|eot_id|>, Gemma's <end_of_turn>, Phi-3's <|end|>) and each id of the model's generation_config.eos_token_id
    (Qwen and Llama-3 list several)."""
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [tokenizer.eos_token_id, templates.end_of_turn(tokenizer), *(listed if isinstance(listed, list) else [listed])]
    return sorted({i for i in ids if i is not None})


def penalize(logits: torch.Tensor, generated: list[int], presence: float, frequency: float,
             bias: dict[int, float]) -> torch.Tensor:
    """OpenAI's penalties and logit bias on a row's next-token logits: each token generated so far loses `presence`
    once and `frequency` per time it came; `bias` adds to the tokens it names. The logits unchanged without them."""
    if not (presence or frequency or bias):
        return logits
    logits = logits.clone()
    if generated and (presence or frequency):
        ids, counts = torch.tensor(generated, device=logits.device).unique(return_counts=True)
        logits[ids] -= presence + frequency * counts.to(logits.dtype)
    if bias:
        logits[torch.tensor(list(bias), device=logits.device)] += torch.tensor(list(bias.values()), device=logits.device)
    return logits


def next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator | None) -> int:
    """One token from a row's next-token logits: the argmax without a generator, else sampled from the generator (a
    row's own, so its draws do not depend on its batch) after temperature, top-k and top-p."""
    if generator is None:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        order = logits.argsort(descending=True)
        cumulative = logits[order].softmax(-1).cumsum(-1)
        drop = cumulative - logits[order].softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        logits[order[drop]] = float("-inf")
    return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
