"""The bodies this server answers with, in OpenAI's shapes: /v1/completions and /v1/chat/completions, whole or
streamed as server-sent events, with each generated token's log-probabilities when asked (chat: `logprobs.content`,
each token with its `top_logprobs`; completions: the legacy `tokens` / `token_logprobs` / `top_logprobs` /
`text_offset`)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

Scored = tuple[float, list[tuple[int, float]]]  # a token's log-probability and its alternatives (decoder.Job.scored)


@dataclass
class Reply:
    """The body of one answer, whole or as stream chunks, in the completion or the chat shape."""

    chat: bool
    stream: bool
    model: str
    spell: Callable[[int], str] = str  # a token id's text (for log-probabilities)
    raw: Callable[[int], bytes] = lambda token: b""  # a token id's bytes
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        self.id = self.id or ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]

    def _body(self, choices: list[dict]) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if self.stream else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def logprobs(self, tokens: list[int], scored: list[Scored], starts: list[int]):
        """`tokens`' log-probabilities in the reply's shape (`starts`: where each token's text starts in the reply);
        None when none were asked for."""
        if not scored:
            return None
        if self.chat:
            return {"content": [{**self._token(t, lp), "top_logprobs": [self._token(a, v) for a, v in top]}
                                for t, (lp, top) in zip(tokens, scored)], "refusal": None}
        return {"tokens": [self.spell(t) for t in tokens], "token_logprobs": [lp for lp, _ in scored],
                "top_logprobs": [{self.spell(a): v for a, v in top} for _, top in scored],
                "text_offset": starts}

    def _token(self, token: int, logprob: float) -> dict[str, Any]:
        return {"token": self.spell(token), "logprob": logprob, "bytes": list(self.raw(token))}

    def whole(self, text: str, finish: str, prompt_tokens: int, completion_tokens: int, logprobs=None) -> dict[str, Any]:
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs, "finish_reason": finish}
                  if self.chat else {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
        return {**self._body([choice]), "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False, logprobs=None) -> str:
        if self.chat:
            delta = {"role": "assistant"} if first else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": logprobs, "finish_reason": finish}
        return event(self._body([choice]))

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> str:
        """stream_options.include_usage: the last chunk, no choices, the usage."""
        return event({**self._body([]), "usage": usage(prompt_tokens, completion_tokens)})


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"
