"""Text decoded as tokens come: only the new tokens are decoded each step, never the whole text again, with a
half-written character held back; the pieces add up to the decode of all the tokens."""

from __future__ import annotations


def decode_step(tokenizer, tokens: list[int], prefix: int, read: int, final: bool = False) -> tuple[str, int, int]:
    """(the text tokens[read:] add, the new offsets): only tokens[prefix:] are decoded, prefix the tokens already
    read before them, so a tokenizer that spells a token differently at the start of a text (a leading space) still
    joins up. A half-written character is held back until the tokens that finish it come, or `final`. The texts
    concatenate to the whole decode of `tokens` (special tokens skipped, spaces not cleaned up)."""
    before = tokenizer.decode(tokens[prefix:read], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    now = tokenizer.decode(tokens[prefix:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if len(now) > len(before) and (final or not now.endswith("\ufffd")):
        return now[len(before):], read, len(tokens)
    return "", prefix, read
