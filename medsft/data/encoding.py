"""Formatted examples -> token ids and labels, as training and evaluation both see them.

The answer is never cut. A string prompt that does not fit is shortened from the left down to its cue (the
question and answer cue), keeping a leading BOS; a conversation loses its oldest turns, then the text of its last
turn is shortened from the left as a string prompt is. A row whose answer or cue cannot fit is dropped and counted.
Language modelling keeps all the text: a long row is split into max_length pieces. The answer's tokens are taken
from the whole rendering, never tokenized alone (spans.py: the same span scoring and generation use); chats are
rendered with the tokenizer's chat template and its keywords (one BOS, as the server does); assistant turns are
trained through the template's own end-of-turn token (Llama-3's <|eot_id|>, Gemma's <end_of_turn>, ...), once, and
the EOS ends every string completion.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from jinja2 import TemplateError

from medsft.data import spans
from medsft.data.templates import chat_ids, end_of_turn, kwargs_of, marks_generation
from medsft.data.truncation import drop_oldest_turn, fit_chat, fit_prompt, protected
from medsft.tasks import Example

IGNORE = -100


def through_eos(mask: list[int], ids: list[int], eos: int | None) -> list[int]:
    """Each trained span ends at its last end-of-turn token `eos`: what a chat template writes after it (a newline,
    Phi-3's closing EOS) is not trained."""
    out, k = list(mask), 0
    while k < len(out):
        if not out[k]:
            k += 1
            continue
        end = k
        while end < len(out) and out[end]:
            end += 1
        last = max((j for j in range(k, end) if ids[j] == eos), default=None)
        if last is not None:
            out[last + 1 : end] = [0] * (end - last - 1)
        k = end
    return out


@dataclass
class Encoder:
    tokenizer: object
    max_length: int | None
    completion_only: bool = True
    assistant_only: bool = True
    generation_markers: bool = field(init=False, default=False)
    end_of_turn: int | None = field(init=False, default=None)

    def __post_init__(self):
        self.generation_markers = marks_generation(getattr(self.tokenizer, "chat_template", None))
        self.end_of_turn = end_of_turn(self.tokenizer)

    def __call__(self, example: Example) -> tuple[list[dict], str]:
        """([{input_ids, labels}, ...], status): status is ok, truncated, split (several pieces), dropped or
        untrained. ValueError when the chat template refuses the row (Gemma's refuses a system turn)."""
        with template_errors(example):
            if example.messages is not None:
                return self._conversation(example.messages)
            if example.text:
                return self._text(example.completion)
            span, status = self._span(example)
            if span is None:
                return [], status
            trained = [0 if self.completion_only else 1] * span.start + [1] * (len(span.ids) - span.start)
            if self.completion_only:
                trained[span.end:] = [0] * (len(span.ids) - span.end)
            return [self._row(span.ids, trained)], status

    def span(self, example: Example, reserve: int = 0, fit: bool = True) -> tuple[spans.Span | None, str]:
        """The prompt + completion example rendered and split as training renders it, its prompt shortened (from the
        left, the cue kept) until the answer and whatever the template writes after it fit max_length, with room for
        at least `reserve` tokens after the prompt (the longest of several choices); (None, "dropped") when the cue
        cannot fit. `fit=False`: whole, whatever its length."""
        with template_errors(example):
            if not fit:
                if isinstance(example.prompt, list):
                    return spans.chat(self.tokenizer, example.prompt, example.completion), "ok"
                return spans.plain(self.tokenizer, example.prompt, example.completion), "ok"
            return self._span(example, reserve)

    def _text(self, text: str) -> tuple[list[dict], str]:
        tok = self.tokenizer
        ids = tok(text)["input_ids"] + [tok.eos_token_id]
        step = self.max_length or len(ids)
        # A last piece of one token (the EOS, say) would train nothing: nothing precedes it in its row.
        pieces = [p for i, p in enumerate(ids[i : i + step] for i in range(0, len(ids), step)) if i == 0 or len(p) > 1]
        return [self._row(p, [1] * len(p)) for p in pieces], ("split" if len(pieces) > 1 else "ok")

    def _span(self, example: Example, reserve: int = 0) -> tuple[spans.Span | None, str]:
        if isinstance(example.prompt, list):
            return self._chat_pair(example.prompt, example.completion, example.cue, reserve)
        tok = self.tokenizer
        span = spans.plain(tok, example.prompt, example.completion)
        need = max(len(span.ids) - span.start, reserve)
        if self.max_length is None or span.start + need <= self.max_length:
            return span, "ok"
        prompt = span.ids[: span.start]
        keep = protected(tok, example.prompt, example.cue, tok(example.prompt)["input_ids"]) if example.prompt else 0
        prompt = fit_prompt(prompt, keep, self.max_length - need, tok.bos_token_id)
        if prompt is None:
            return None, "dropped"
        cut = span.start - len(prompt)
        return spans.Span(prompt + span.ids[span.start :], span.start - cut, span.stop - cut, span.end - cut), "truncated"

    def _row(self, ids: list[int], trained: list[int]) -> dict:
        return {"input_ids": ids, "labels": [t if m else IGNORE for t, m in zip(ids, trained)]}

    def _chat_pair(self, prompt: list[dict], completion: list[dict], cue: str = "", reserve: int = 0):
        status = "ok"
        span = spans.chat(self.tokenizer, prompt, completion)
        while self.max_length is not None and span.start + max(len(span.ids) - span.start, reserve) > self.max_length:
            need = max(len(span.ids) - span.start, reserve)
            status, shorter = "truncated", drop_oldest_turn(prompt)
            if shorter is None:  # one turn left: its text shortened, the answer and the cue kept
                shorter = fit_chat(self.tokenizer, prompt, self.max_length - need, cue)
                if shorter is None:
                    return None, "dropped"
            prompt, previous = shorter, span.start
            span = spans.chat(self.tokenizer, prompt, completion)
            if span.start >= previous:  # a template that renders the shortened prompt no shorter
                return None, "dropped"
        return span, status

    def _conversation(self, messages: list[dict]) -> tuple[list[dict], str]:
        if self.assistant_only and not any(m["role"] == "assistant" for m in messages):
            return [], "untrained"  # nothing to learn from, whatever max_length is
        status = "ok"
        while True:
            ids = chat_ids(self.tokenizer, messages)
            if self.max_length is None or len(ids) <= self.max_length:
                break
            messages, status = drop_oldest_turn(messages, keep_last=2), "truncated"
            if messages is None or not any(m["role"] == "assistant" for m in messages):
                return [], "dropped"
        mask = self._assistant_mask(messages, ids) if self.assistant_only else [1] * len(ids)
        if not any(mask):
            return [], "dropped"
        return [self._row(ids, mask)], status

    def _assistant_mask(self, messages: list[dict], ids: list[int]) -> list[int]:
        tok = self.tokenizer
        if self.generation_markers:  # the template marks the assistant tokens itself
            mask = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                           **kwargs_of(tok))["assistant_masks"]
            return through_eos(list(mask), ids, self.end_of_turn)
        rendered, turns = spans.assistant_turns(tok, messages)
        if rendered != ids:
            raise ValueError("the chat template renders differently from one call to the next; use a deterministic template")
        mask = [0] * len(ids)
        for start, end in turns:
            mask[start:end] = [1] * (end - start)
        return mask


@contextmanager
def template_errors(example: Example):
    """A chat template's own refusal (Gemma's of a system turn) as a ValueError naming what to change."""
    try:
        yield
    except TemplateError as e:
        messages = example.messages or (example.prompt if isinstance(example.prompt, list) else [])
        hint = ("; this model's template takes no system turn: drop system_prompt (or the system messages)"
                if any(m["role"] == "system" for m in messages) else "")
        raise ValueError(f"the chat template refuses a row: {e.message}{hint}") from None


@dataclass
class EncodeStats:
    rows: int = 0
    kept: int = 0  # rows that train (a split row counts once)
    truncated: int = 0  # context shortened so the answer fits
    dropped: int = 0  # the answer or the question/answer cue cannot fit in max_length
    skipped: int = 0  # the task could not format the row (e.g. the named section is absent)
    untrained: int = 0  # a conversation without an assistant turn: nothing to train
    split: int = 0  # long texts split into max_length pieces
    pieces: int = 0  # the rows those became
    lengths: list[int] = field(default_factory=list)
    trained_tokens: int = 0  # labels that train, in the rows kept
    all_masked: int = 0  # rows kept that train nothing


def _encode_batch(batch: dict, indices: list[int], encoder: Encoder) -> dict:
    out = {"input_ids": [], "labels": [], "status": [], "source": [], "trained": []}
    for text, index in zip(batch["example"], indices):
        rows, status = encoder(Example(**json.loads(text))) if text else ([], "skipped")
        for row in rows or [{"input_ids": [], "labels": []}]:
            out["input_ids"].append(row["input_ids"])
            out["labels"].append(row["labels"])
            out["status"].append(status)
            out["source"].append(index)
            out["trained"].append(sum(label != IGNORE for label in row["labels"]))
    return out


def encode(examples: list[Example | None], encoder: Encoder, num_proc: int | None = None):
    """Examples (None: unformattable) -> (datasets.Dataset of input_ids / labels or None, EncodeStats).
    num_proc > 1 tokenizes in that many processes (SFTConfig's dataset_num_proc)."""
    import pyarrow.compute
    from datasets import Dataset

    source = Dataset.from_dict({"example": [json.dumps(asdict(e)) if e is not None else "" for e in examples]})
    encoded = source.map(_encode_batch, batched=True, with_indices=True, fn_kwargs={"encoder": encoder}, remove_columns=["example"],
                         num_proc=num_proc if num_proc and num_proc > 1 and len(examples) > 1 else None)
    # whole columns through Arrow: iterating a datasets Column goes row by row through its formatter (45 s at 50k rows)
    table = encoded.data
    status, sources, trained = (table.column(name).to_pylist() for name in ("status", "source", "trained"))
    stats = EncodeStats(rows=len(examples))
    for name in ("dropped", "skipped", "untrained", "truncated"):
        setattr(stats, name, status.count(name))
    stats.pieces = status.count("split")
    stats.split = len({src for src, s in zip(sources, status) if s == "split"})
    stats.kept = stats.rows - stats.dropped - stats.skipped - stats.untrained
    keep = [i for i, s in enumerate(status) if s not in ("dropped", "skipped", "untrained")]
    if not keep:
        return None, stats
    kept = encoded.select(keep).remove_columns(["status", "source", "trained"])
    lengths = pyarrow.compute.list_value_length(table.column("input_ids")).to_pylist()
    stats.lengths = [lengths[i] for i in keep]
    stats.trained_tokens = sum(trained[i] for i in keep)
    stats.all_masked = sum(1 for i in keep if trained[i] == 0)
    return kept, stats
