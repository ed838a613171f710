"""The prompts replies and answers follow, one definition each for every command: a prompt's ids as training
renders it (generate, the sample panels), each choice of a choice task as the whole answer (likelihood scoring,
`generate --question`), and the prompt an answer follows (generated answers, GRPO's prompts)."""

from __future__ import annotations

from medsft.data import spans
from medsft.data.encoding import Encoder
from medsft.data.spans import Span
from medsft.data.truncation import fit_chat, fit_prompt
from medsft.tasks import Task


def prompt_ids(tokenizer, prompt: str | list[dict], room: int | None = None) -> list[int]:
    """The ids a reply to `prompt` is generated after: a conversation's generation prompt as training renders it,
    or the text with the tokenizer's BOS; with `room`, shortened from the left to that many tokens as training
    shortens a prompt (a chat's last turn loses text, its template's turn markers kept)."""
    if isinstance(prompt, list):
        if room is not None:
            prompt = fit_chat(tokenizer, prompt, room) or prompt
        return spans.generation_prompt(tokenizer, prompt)
    ids = tokenizer(prompt)["input_ids"]
    return ids if room is None else fit_prompt(ids, 0, max(room, 1), tokenizer.bos_token_id) or ids[-max(room, 1):]


def choice_spans(encoder: Encoder, task: Task, row: dict) -> list[Span]:
    """Each of the row's choices as the whole answer, rendered and split as training renders it (spans.py); when the
    prompt must be shortened, every choice's alike, leaving room for the longest (an item whose cue alone does not
    fit is still scored, its prompt cut plainly from the left)."""
    return alike([task.choice_example(row, label) for label in task.row_labels(row)], encoder)


def alike(examples: list, encoder: Encoder) -> list[Span]:
    """Answers to one prompt, each rendered and split as training renders it, the prompt shortened alike for all
    (room left for the longest answer) where it must be."""
    whole = [encoder.span(e, fit=False)[0] for e in examples]
    room = encoder.max_length
    reserve = max(len(s.ids) - s.start for s in whole)
    if room is None or all(s.start + reserve <= room for s in whole):
        return whole
    fitted = [encoder.span(e, reserve)[0] for e in examples]
    if all(f is not None for f in fitted):
        return fitted
    bos = encoder.tokenizer.bos_token_id
    cut = [fit_prompt(s.ids[: s.start], 0, max(1, room - reserve), bos) for s in whole]
    return [Span(c + s.ids[s.start :], len(c), len(c) + s.stop - s.start, len(c) + s.end - s.start)
            for c, s in zip(cut, whole)]


def answer_prompt(encoder: Encoder, task: Task, row: dict) -> list[int]:
    """The ids a reply to the row is generated after: the tokens before the answer where training puts it (chat
    template, Qwen3's empty think block, a plain prompt's cue), shortened as training shortens the prompt of its
    longest choice: the same prompt the choices' likelihoods are scored after. The reply may run past max_length,
    which bounds what training holds, not the model's context."""
    first = choice_spans(encoder, task, row)[0]
    return first.ids[: first.start]
