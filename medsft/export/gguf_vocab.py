"""A run's tokenizer as llama.cpp's GGUF metadata, read from the tokenizer's own `tokenizer.json` (what every run
folder holds), of either kind a released chat model uses:

- byte-level BPE (Llama 3, Qwen, SmolLM): tokenizer model `gpt2`, the tokens, the merges, and the pre-tokenizer's
  name by the regex it splits with;
- SentencePiece BPE with byte fallback (Llama 2, Mistral, Phi-3, Gemma): tokenizer model `llama`, whose tokenizer
  merges any two neighbours that make a token, the highest-scored first, so each token's score is minus the rank of
  the merge that makes it (the order sentencepiece's own BPE scores keep); `<0xNN>` tokens are bytes; where a space
  is put before a text (_space_prefix).

Both: token types (control for special tokens, user-defined for added ones such as `<think>`), the special ids with
the end-of-turn token as the end of generation, whether BOS starts a text, and the chat template verbatim."""

from __future__ import annotations

import json

from medsft.errors import UserError

# llama.cpp's pre-tokenizer names, by the split a byte-level BPE tokenizer makes before its merges (a Split by its regex)
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}%s| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {"ByteLevel": "gpt-2", "Digits+ByteLevel": "smollm", f"Split:{_WORDS % ''}+ByteLevel": "qwen2",
                  f"Split:{_WORDS % '{1,3}'}+ByteLevel": "llama-bpe"}
SPACE = "\u2581"  # sentencepiece's mark for a space


def _steps(part: dict | None) -> list[dict]:
    part = part or {}
    return part.get("pretokenizers") or part.get("normalizers") or ([part] if part else [])


def _pre_tokenizer(spec: dict) -> str | None:
    """llama.cpp's name for a byte-level BPE tokenizer's split, None for another tokenizer."""
    key = "+".join(f"Split:{p['pattern'].get('Regex')}" if p.get("type") == "Split" else str(p.get("type"))
                   for p in _steps(spec.get("pre_tokenizer")))
    return PRE_TOKENIZERS.get(key) if spec["model"].get("type") == "BPE" else None


def _space_prefix(spec: dict, after_special: bool) -> bool | None:
    """For a SentencePiece BPE tokenizer (spaces written as ▁, bytes as <0xNN>), llama.cpp's add_space_prefix; None
    for another tokenizer. llama.cpp puts a space before the text and after every special token, or nowhere: a Prepend
    normalizer (Phi-3) and Metaspace's `always` (Llama 2's legacy spelling) do the same; Gemma prepends nowhere;
    Metaspace's `first` prepends at the very start of a text only, which llama.cpp does without a special token in
    the text: so on when the run's texts start with words (plain prompts), off when they start with a special token
    (a chat template's BOS or role marker), where a prefix after it would be a space the run never saw."""
    model, steps = spec["model"], _steps(spec.get("pre_tokenizer")) + _steps(spec.get("normalizer"))
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return None
    metaspace = [s for s in steps if s.get("type") == "Metaspace"]
    if metaspace:
        scheme = metaspace[0].get("prepend_scheme", "always")
        return scheme == "always" or (scheme == "first" and not after_special)
    if any(s.get("type") == "Replace" and s.get("content") == SPACE for s in steps):
        return any(s.get("type") == "Prepend" and s.get("prepend") == SPACE for s in steps)
    return None


def _merges(spec: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]


def _scores(spec: dict, tokens: list[str]) -> list[float]:
    """Minus the rank of the first merge that makes each token; the lowest score for a token no merge makes."""
    made: dict[str, int] = {}
    for rank, merge in enumerate(_merges(spec)):
        made.setdefault(merge.replace(" ", ""), rank)
    return [-float(made.get(t, len(made))) for t in tokens]


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts BOS before a text (llama.cpp then does too)."""
    bos = tokenizer.bos_token_id
    return bool(bos is not None and tokenizer("a")["input_ids"][:1] == [bos])


def write(writer, tokenizer, vocab_size: int, end_of_turn: int | None, texts: list[str]) -> None:
    """`tokenizer`'s vocabulary, kind, special ids and chat template into the GGUF `writer`; `texts`: the run's texts
    as training renders them."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    specials = [t["content"] for t in spec.get("added_tokens", [])]
    after_special = any(text.startswith(tuple(specials)) for text in texts) if specials else False
    pre, space_prefix = _pre_tokenizer(spec), _space_prefix(spec, after_special)
    if pre is None and space_prefix is None:
        kinds = ", ".join(PRE_TOKENIZERS.values())
        raise UserError(f"this tokenizer ({spec['model'].get('type')}) is not written by medsft's GGUF export; it writes "
                        f"byte-level BPE ({kinds}) and SentencePiece BPE with byte fallback")
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id = {i: t for t, i in spec["model"]["vocab"].items()} | {i: t["content"] for i, t in added.items()}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(vocab_size)]
    types = []
    for i, token in enumerate(tokens):
        if i == tokenizer.unk_token_id and pre is None:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif pre is None and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if pre is not None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_merges(_merges(spec))
    else:  # llama.cpp's SentencePiece tokenizer reads scores, not merges (and transformers' reader rebuilds merges from them)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(_scores(spec, tokens))
        writer.add_add_space_prefix(space_prefix)
    unk = tokenizer.unk_token_id if pre is None else None  # byte-level BPE has no unknown token (GPT-2 names one)
    for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_unk_token_id, unk), (writer.add_pad_token_id, tokenizer.pad_token_id),
                          (writer.add_eot_token_id, end_of_turn)):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(adds_bos(tokenizer))
    writer.add_add_eos_token(bool(tokenizer("a")["input_ids"][-1:] == [tokenizer.eos_token_id]))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
