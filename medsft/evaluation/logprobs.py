"""Log-probabilities of chosen tokens without a vocabulary-sized distribution per position.

The model runs to its final hidden states at the scored positions only (`logits_to_keep` as a boolean mask), with
its LM head's own call intercepted so that no logits are made there; the head then projects those states a chunk
of rows at a time on the model's device, and each chunk is reduced at once to
log p(target) = logit(target) - logsumexp(logits), after the model's own final softcapping and logit scale. Memory
is bounded by one chunk times the vocabulary, never by batch x positions x vocabulary, and only the numbers an item
needs leave the device.

Under ZeRO-3 (and any sharding that gathers a module's weights when it is called) every call of the head is a
collective: every process must call it as often as the others, whatever it scores. The caller says how often
(`calls`, the most any process needs for its batch: head_calls); a process with fewer rows projects none in the
calls left over.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

ROWS = 64  # hidden-state rows projected at once: 64 x 256,000 float32 logits is 66 MB


def _finish(config):
    """The model's own steps between its LM head and its logits (read as TRL's fused LM head reads them): a logit
    scale (Cohere's logit_scale, Granite's logits_scaling, Falcon-H1's lm_head_multiplier) and Gemma-2's final
    softcapping."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(text, "logit_scale", None) or getattr(text, "output_multiplier", None) or getattr(text, "lm_head_multiplier", None)
    if scale is None and getattr(text, "logits_scaling", None):
        scale = 1 / text.logits_scaling
    cap = getattr(text, "final_logit_softcapping", None)

    def finish(logits: torch.Tensor) -> torch.Tensor:
        if scale is not None and scale != 1:
            logits = logits * scale
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return finish


@contextmanager
def _intercepted(head):
    """While open, the head records the hidden states it is called on and returns a placeholder (one column)."""
    seen: list[torch.Tensor] = []
    own = head.__dict__.get("forward")  # an instance-level forward someone else set (kept and restored)

    def record(hidden):
        seen.append(hidden)
        return hidden.new_zeros(*hidden.shape[:-1], 1)

    head.forward = record
    try:
        yield seen
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own


def head_calls(kept: int) -> int:
    """The head calls that project `kept` rows."""
    return -(-kept // ROWS)


def _owner(model):
    """The causal LM whose forward applies the head (under a PEFT wrapper, its base model)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def target_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor,
                     rows: torch.Tensor, tokens: torch.Tensor, calls: int = 0) -> torch.Tensor:
    """log p(tokens[n]) at kept position rows[n] (kept positions counted in (batch row, position) order, the
    next-token distribution there), for every n; on the host, as float32. The head is called
    max(calls, head_calls(kept positions)) times: `calls` is what every process agrees on under sharding."""
    head = _owner(model).get_output_embeddings()
    finish = _finish(_owner(model).config)
    with _intercepted(head) as seen:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep)
    hidden = seen[0].reshape(-1, seen[0].shape[-1])
    rows, tokens = rows.to(hidden.device), tokens.to(hidden.device)
    out = torch.empty(len(rows), dtype=torch.float32, device=hidden.device)
    for start in range(0, max(calls, head_calls(hidden.shape[0])) * ROWS, ROWS):
        logits = finish(head(hidden[start : start + ROWS])).float()
        mine = ((rows >= start) & (rows < start + ROWS)).nonzero().squeeze(-1)
        local = rows[mine] - start
        out[mine] = logits[local, tokens[mine]] - torch.logsumexp(logits, dim=-1)[local]
    return out.cpu()
