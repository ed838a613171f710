"""The answer's tokens: one definition for training's label mask, choice and perplexity scoring, and the prompt that
generation starts from.

A prompt and its answer are rendered together exactly as training renders them (the chat template over the whole
conversation, or the prompt and the completion as one text), tokenized whole, and the answer's tokens are those that
spell its text in that rendering. What a token holds depends on what precedes it (a SentencePiece vocabulary holds
`▁yes` and `yes`; Phi-3's answer follows `<|assistant|>\\n`), so an answer is never tokenized on its own; a token
that straddles the boundary belongs to the answer, as lm-evaluation-harness splits context + continuation.
Everything before the answer is its prompt, including what a template writes between its generation prompt and the
content (Qwen3's empty think block): scoring and generation start there. The trained span runs on through the
template's end-of-turn token (or the EOS after a plain completion).

Where a chat template writes an assistant's text is found by rendering the conversation again with that text
replaced: the two renderings differ exactly there, however the template wraps, trims or moves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from medsft.data.templates import PROBE, chat_text, end_of_turn


@dataclass(frozen=True)
class Span:
    ids: list[int]  # the whole rendering
    start: int  # the answer's first token: ids[:start] is the prompt it is scored and generated after
    stop: int  # one past the answer text's last token: ids[start:stop] are what a choice is scored on
    end: int  # one past the trained span: the answer through its end-of-turn token (or EOS)


def common_prefix(a, b) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _encode(tokenizer, text: str, special: bool) -> tuple[list[int], list[tuple[int, int]] | None]:
    """The text's ids and each token's characters (None for a tokenizer without offsets)."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        return encoded["input_ids"], [tuple(o) for o in encoded["offset_mapping"]]
    return tokenizer(text, add_special_tokens=special)["input_ids"], None


def _first_token(tokenizer, text: str, ids: list[int], offsets, char: int, special: bool) -> int:
    """The first token holding any character at or after `char` (a token straddling it included)."""
    if offsets is not None:
        return next((k for k, (a, b) in enumerate(offsets) if b > char and b > a), len(ids))
    return common_prefix(tokenizer(text[:char], add_special_tokens=special)["input_ids"], ids)


def _after_last(offsets, ids: list[int], char: int, first: int) -> int:
    """One past the last token holding a character before `char` (at least `first`)."""
    if offsets is None:
        return first
    last = max((k for k, (a, b) in enumerate(offsets) if a < char and b > a), default=first - 1)
    return max(first, last + 1)


def plain(tokenizer, prompt: str, completion: str) -> Span:
    """A string prompt and completion rendered as one text (the tokenizer's BOS first), then the EOS."""
    text = prompt + completion
    ids, offsets = _encode(tokenizer, text, True)
    eos = tokenizer.eos_token_id
    if ids and ids[-1] == eos and len(ids) > 1 and not text.endswith(str(tokenizer.eos_token)):
        ids, offsets = ids[:-1], offsets and offsets[:-1]  # a tokenizer that appends EOS itself: it comes once, last
    start = _first_token(tokenizer, text, ids, offsets, len(prompt), True) if prompt else 0
    if offsets is None:
        stop = len(ids)
    else:
        stop = _after_last(offsets, ids, len(text), start)
    return Span(ids[:stop] + [eos], start, stop, stop + 1)


def _sentinel(content: str) -> str:
    """A one-character stand-in for `content` that differs from its first and last characters."""
    text = content.strip()
    return next(s for s in "@#%" if not text or s not in (text[0], text[-1]))


def _content_chars(tokenizer, messages: list[dict], i: int, text: str, extra: dict | None) -> tuple[int, int]:
    """Where message i's text sits in `text` (the rendering of `messages`): the characters that change when it does."""
    other = [*messages[:i], {**messages[i], "content": _sentinel(messages[i]["content"])}, *messages[i + 1:]]
    alt = chat_text(tokenizer, other, False, extra)
    head = common_prefix(text, alt)
    tail = common_prefix(text[head:][::-1], alt[head:][::-1])
    return head, len(text) - tail


def _turn(tokenizer, messages, i, text, ids, offsets, eot, extra) -> tuple[int, int, int]:
    """(start, stop, end) of assistant message i in the rendering of `messages`."""
    first, last = _content_chars(tokenizer, messages, i, text, extra)
    start = _first_token(tokenizer, text, ids, offsets, first, False)
    stop = _after_last(offsets, ids, last, start) if offsets is not None else _first_token(
        tokenizer, text, ids, None, last, False)
    end = next((k + 1 for k in range(stop, len(ids)) if ids[k] == eot), None)
    if end is None:  # no end-of-turn token: the turn ends where the rendering of the conversation so far does
        through = common_prefix(chat_text(tokenizer, messages[: i + 1], False, extra), text)
        end = max(stop, _first_token(tokenizer, text, ids, offsets, through, False))
    return start, stop, end


def chat(tokenizer, prompt: list[dict], completion: list[dict], extra: dict | None = None) -> Span:
    """A conversational prompt and its reply (assistant messages) through the chat template; the span runs from the
    reply's first text to the end-of-turn token after its last."""
    messages = [*prompt, *completion]
    text = chat_text(tokenizer, messages, False, extra)
    ids, offsets = _encode(tokenizer, text, False)
    eot = end_of_turn(tokenizer)
    start, stop, end = _turn(tokenizer, messages, len(prompt), text, ids, offsets, eot, extra)
    if len(completion) > 1:
        _, stop, end = _turn(tokenizer, messages, len(messages) - 1, text, ids, offsets, eot, extra)
    return Span(ids, start, stop, end)


def assistant_turns(tokenizer, messages: list[dict]) -> tuple[list[int], list[tuple[int, int]]]:
    """(the conversation's ids, each assistant turn's trained (start, end))."""
    text = chat_text(tokenizer, messages)
    ids, offsets = _encode(tokenizer, text, False)
    eot = end_of_turn(tokenizer)
    turns = []
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            start, _, end = _turn(tokenizer, messages, i, text, ids, offsets, eot, None)
            turns.append((start, end))
    return ids, turns


def generation_prompt(tokenizer, messages: list[dict], extra: dict | None = None) -> list[int]:
    """The ids an assistant reply to `messages` is generated (and scored) after: everything the template renders
    before the reply's text, as training rendered it."""
    span = chat(tokenizer, messages, [{"role": "assistant", "content": PROBE}], extra)
    return span.ids[: span.start]


def rendering(tokenizer, example) -> tuple[str, bool]:
    """The text training tokenizes for a formatted example, and whether the tokenizer adds its own special tokens
    (a plain text's BOS) or not (a chat template writes them): as plain(), chat() and the encoder's rows render it."""
    if example.messages is not None:
        return chat_text(tokenizer, example.messages), False
    if isinstance(example.prompt, list):
        return chat_text(tokenizer, [*example.prompt, *example.completion]), False
    return example.prompt + example.completion, True
