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


def token_bytes(tokenizer):
    """A function from a token id to the bytes it spells (OpenAI's `bytes` of a log-probability): a byte-level BPE
    token's own bytes, a SentencePiece byte-fallback token's one byte, else its decoded text's UTF-8. A character
    split over tokens has each token's share of its bytes, so the bytes of a reply's tokens join up to its text."""
    import json
    import re

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = json.loads(backend.to_str()).get("decoder") if backend is not None else None
    byte_level = "ByteLevel" in json.dumps(decoder or {})
    unicode_to_byte = {c: b for b, c in bytes_to_unicode().items()}

    def spell(token: int) -> bytes:
        piece = tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str) and re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            return bytes([int(piece[3:5], 16)])
        if byte_level and isinstance(piece, str) and all(c in unicode_to_byte for c in piece):
            return bytes(unicode_to_byte[c] for c in piece)
        return tokenizer.decode([token]).encode("utf-8")

    return spell
