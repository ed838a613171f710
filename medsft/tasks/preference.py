"""Preference data in TRL's formats, from files, no Python: `prompt` / `chosen` / `rejected` (text, or a prompt's
messages and each answer's assistant messages), the implicit-prompt form (`chosen` / `rejected` conversations that
share their first turns: those are the prompt), and KTO's unpaired `prompt` / `completion` / `label`. A pair trains
DPO and ORPO, and, unpaired (chosen desirable, rejected not), KTO; SFT on this task trains the chosen answer."""

from __future__ import annotations

from typing import Any

from medsft.tasks.base import Example, Task, render
from medsft.tasks.chat import check_messages

PAIRED = ("chosen", "rejected")


def _answer(value: Any, field: str) -> str | list[dict]:
    """An answer: non-empty text, or assistant messages."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{field} is empty")
        return value
    if isinstance(value, list):
        messages = check_messages(value, field)
        if any(not m["content"].strip() for m in messages if m["role"] == "assistant"):
            raise ValueError(f"{field} has an empty assistant message")
        return messages
    raise ValueError(f"{field} must be text or a list of messages, got {type(value).__name__}")


def _split_implicit(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(the shared first turns, chosen's last assistant turn, rejected's): the implicit prompt."""
    def last_assistant(messages: list[dict], field: str) -> int:
        found = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not found or found[-1] == 0:
            raise ValueError(f"{field} must end in an assistant turn after the turns it shares with the other answer")
        return found[-1]

    c, r = last_assistant(chosen, "chosen"), last_assistant(rejected, "rejected")
    if chosen[:c] != rejected[:r]:
        turn = next((i for i, (a, b) in enumerate(zip(chosen[:c], rejected[:r])) if a != b), min(c, r))
        raise ValueError(f"chosen and rejected do not share their first turns (the implicit prompt): they differ at "
                         f"message {turn + 1}")
    return chosen[:c], chosen[c:], rejected[r:]


class Preference(Task):
    name = "preference"
    options = ("prompt_template", "chat", "system_prompt")
    pairwise = True

    def row(self, raw, key):
        if "label" in raw or "completion" in raw:  # KTO's unpaired form
            return self._unpaired(raw, key)
        for field in PAIRED:
            if raw.get(field) is None:
                raise KeyError(field)
        chosen, rejected = _answer(raw["chosen"], "chosen"), _answer(raw["rejected"], "rejected")
        if chosen == rejected:
            raise ValueError("chosen and rejected are the same answer; a pair needs two different ones")
        if self.spec.prompt_template:
            prompt: Any = render(self.spec.prompt_template, raw, "prompt_template")
        elif "prompt" in raw:
            prompt = raw["prompt"]
        elif isinstance(chosen, list) and isinstance(rejected, list):
            prompt, chosen, rejected = _split_implicit(chosen, rejected)
        else:
            raise KeyError("prompt")
        prompt = self._prompt(prompt)
        if isinstance(prompt, list) != isinstance(chosen, list) or isinstance(chosen, list) != isinstance(rejected, list):
            raise ValueError("prompt, chosen and rejected must all be text or all be message lists")
        return {**super().row(raw, key), "prompt": prompt, "chosen": chosen, "rejected": rejected}

    def _unpaired(self, raw, key):
        for field in ("completion", "label"):
            if raw.get(field) is None:
                raise KeyError(field)
        if not isinstance(raw["label"], bool):
            raise ValueError(f"label must be true or false (is the completion desirable?), got {raw['label']!r}")
        if self.spec.prompt_template:
            prompt: Any = render(self.spec.prompt_template, raw, "prompt_template")
        elif raw.get("prompt") is None:
            raise KeyError("prompt")
        else:
            prompt = raw["prompt"]
        prompt, completion = self._prompt(prompt), _answer(raw["completion"], "completion")
        if isinstance(prompt, list) != isinstance(completion, list):
            raise ValueError("prompt and completion must both be text or both be message lists")
        return {**super().row(raw, key), "prompt": prompt, "completion": completion, "label": raw["label"]}

    def _prompt(self, prompt: Any) -> str | list[dict]:
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("prompt is empty")
            return prompt
        if isinstance(prompt, list):
            return check_messages(prompt, "prompt")
        raise ValueError(f"prompt must be text or a list of messages, got {type(prompt).__name__}")

    def _as_example(self, prompt, answer) -> Example:
        if isinstance(prompt, list):
            return Example(prompt, answer)
        if self.spec.chat:  # the prompt as the user's turn, the answer as the assistant's
            return self.formatted(prompt, answer, "")
        return Example(prompt, answer)

    def example(self, row):
        """SFT on preference data trains the chosen answer (or a desirable completion); None for an undesirable one."""
        if "label" in row:
            return self._as_example(row["prompt"], row["completion"]) if row["label"] else None
        return self._as_example(row["prompt"], row["chosen"])

    def pairs(self, row, everyone, rng) -> list[tuple[Example, Example]]:
        if "label" in row:
            return []  # an unpaired row pairs with nothing
        return [(self._as_example(row["prompt"], row["chosen"]), self._as_example(row["prompt"], row["rejected"]))]

    def unpaired(self, row, everyone, rng) -> list[tuple[Example, bool]]:
        if "label" in row:
            return [(self._as_example(row["prompt"], row["completion"]), row["label"])]
        chosen, rejected = self.pairs(row, everyone, rng)[0]
        return [(chosen, True), (rejected, False)]
