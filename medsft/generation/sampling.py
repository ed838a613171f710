"""Text generation that the sample panels, the generate command and the server share: every token that ends a reply
(`stop_ids`), and one completion per prompt."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from medsft.data import templates, truncation


def stop_ids(tokenizer, model=None) -> list[int]:
    """Every token that ends a reply: the tokenizer's EOS, the chat template's end-of-turn token (Llama-3's
    <|eot_id|>, Gemma's <end_of_turn>, Phi-3's <|end|>) and each id of the model's generation_config.eos_token_id
    (Qwen and Llama-3 list several)."""
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [tokenizer.eos_token_id, templates.end_of_turn(tokenizer), *(listed if isinstance(listed, list) else [listed])]
    return sorted({i for i in ids if i is not None})


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str | list[int]], max_new_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 0.9, seed: int = 0, max_length: int | None = None, top_k: int = 0,
             streamer=None) -> list[str]:
    """One completion per prompt (text, or token ids such as a rendered chat), the new text only, stopping at any
    of `stop_ids`.
    temperature 0 is greedy; otherwise prompt i samples under seed + i, so the base and the tuned model draw with
    the same seeds whatever else ran before. top_k 0 keeps every token; a streamer receives tokens as they come."""
    device = model.get_input_embeddings().weight.device  # the first of several under a device_map
    sampling = temperature > 0
    stops = stop_ids(tokenizer, model)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=top_k if sampling and top_k > 0 else None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stops,
    )
    outputs = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else list(prompt)
        if max_length is not None:  # leave room for the answer, cut the prompt as training cuts it
            ids = truncation.fit_prompt(ids, 0, max(1, max_length - max_new_tokens), tokenizer.bos_token_id) or ids[-1:]
        if not ids:  # an empty prompt on a tokenizer without BOS: start from a stop token, the document separator
            ids = stops[:1]
        input_ids = torch.tensor([ids], device=device)
        torch.manual_seed(seed + i)
        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
                             streamer=streamer)
        outputs.append(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    return outputs


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
