"""A prompt shortened to fit: from the left, a leading BOS and its cue (the question and the answer cue) kept; a
conversation's oldest turns dropped, then its last turn's text shortened the same way. Training and scoring
shorten alike."""

from __future__ import annotations

from medsft.data.spans import generation_prompt


def protected(tokenizer, prompt: str, cue: str, ids: list[int], special: bool = True) -> int:
    """How many tokens at the end of `ids` (the tokenized prompt, with special tokens or not) spell the cue."""
    if not cue or not prompt.endswith(cue):
        return 0
    start = len(prompt) - len(cue)
    if tokenizer.is_fast:
        offsets = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=special)["offset_mapping"]
        first = next((k for k, (_, end) in enumerate(offsets) if end > start), len(ids))
        return len(ids) - first
    return len(tokenizer(cue, add_special_tokens=False)["input_ids"])


def fit_prompt(ids: list[int], keep: int, room: int, bos_token_id: int | None) -> list[int] | None:
    """The last `room` tokens of a prompt with a leading BOS kept; None when the last `keep` tokens do not fit."""
    if len(ids) <= room:
        return ids
    bos = 1 if ids and ids[0] == bos_token_id else 0
    if room - bos < max(keep, 1):
        return None
    return ids[:bos] + ids[len(ids) - (room - bos) :]


def fit_chat(tokenizer, messages: list[dict], room: int, cue: str = "") -> list[dict] | None:
    """A conversational prompt whose rendering (through the generation prompt, as the answer follows it) fits `room`
    tokens: its last message's text shortened from the left as a string prompt is, the cue at its end kept; None
    when even the cue does not fit. Training and scoring shorten a chat prompt alike."""
    ids = generation_prompt(tokenizer, messages)
    if len(ids) <= room:
        return messages
    last = messages[-1]
    text_ids = tokenizer(last["content"], add_special_tokens=False)["input_ids"]
    keep = protected(tokenizer, last["content"], cue, text_ids, special=False)
    for extra in range(4):  # the shortened text can retokenize a token or two longer: cut a little more
        cut = len(ids) - room + extra
        if len(text_ids) - cut < max(keep, 1):
            return None
        shortened = [*messages[:-1], {**last, "content": tokenizer.decode(text_ids[cut:])}]
        if len(generation_prompt(tokenizer, shortened)) <= room:
            return shortened
    return None


def drop_oldest_turn(messages: list[dict], keep_last: int = 1) -> list[dict] | None:
    """The conversation without its oldest non-system turn (and any assistant turn left leading); None when only
    the system message and the last `keep_last` messages remain."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system) :]
    if len(rest) <= keep_last + 1:
        return None
    rest = rest[1:]
    while rest and rest[0]["role"] == "assistant" and len(rest) > keep_last:
        rest = rest[1:]
    return system + rest
