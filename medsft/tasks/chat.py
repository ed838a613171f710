"""Conversations: TRL's "messages" format, and the checks every message list gets (prompt-completion too)."""

from __future__ import annotations

from typing import Any

from medsft.tasks.base import Example, Task

ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT = {"human": "user", "gpt": "assistant", "system": "system"}


def check_messages(messages: Any, field: str) -> list[dict[str, str]]:
    """A list of {role, content}; ValueError naming the message and what is wrong with it."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{field} must be a non-empty list of {{role, content}} messages")
    for i, message in enumerate(messages, 1):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"{field} message {i} must be a mapping with role and content")
        if message["role"] not in ROLES:
            raise ValueError(f"{field} message {i} has unknown role {message['role']!r}; roles are {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise ValueError(f"{field} message {i} content must be text")
    return messages


class Messages(Task):
    """Whole conversations; with assistant_only_loss (medsft's default) only the assistant turns are trained."""

    name = "messages"

    def row(self, raw, key):
        if "messages" not in raw and "conversations" in raw:  # ShareGPT's {from, value}
            raw = {**raw, "messages": [{"role": _SHAREGPT.get(m.get("from"), m.get("from")), "content": m.get("value")}
                                       for m in raw["conversations"]]}
        if raw.get("messages") is None:
            raise KeyError("messages")
        check_messages(raw["messages"], "messages")
        return super().row(raw, key)

    def example(self, row):
        return Example(messages=row["messages"])
