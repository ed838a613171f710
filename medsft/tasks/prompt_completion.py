"""TRL's prompt-completion format: the prompt is masked, the completion (and EOS) trained. Both may be strings or,
conversational, message lists rendered with the chat template."""

from __future__ import annotations

from medsft.tasks.base import Example, Task
from medsft.tasks.chat import check_messages


def last_line(prompt: str) -> str:
    """The answer cue a generic prompt ends with ("...\\nAnswer:"): what truncation must keep."""
    end = prompt.rstrip("\n").rfind("\n")
    return prompt[end + 1 :] if end >= 0 else prompt


class PromptCompletion(Task):
    name = "prompt_completion"

    def row(self, raw, key):
        for field in ("prompt", "completion"):
            if raw.get(field) is None:
                raise KeyError(field)
        kinds = {type(raw["prompt"]), type(raw["completion"])}
        if kinds == {list}:
            check_messages(raw["prompt"], "prompt")
            check_messages(raw["completion"], "completion")
        elif kinds != {str}:
            raise ValueError("prompt and completion must both be text or both be message lists")
        return super().row(raw, key)

    def example(self, row):
        if isinstance(row["prompt"], list):
            return Example(row["prompt"], row["completion"])
        return Example(row["prompt"], row["completion"], cue=last_line(row["prompt"]))
