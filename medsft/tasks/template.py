"""A prompt and a completion declared in the recipe over the row's own fields: no Python."""

from __future__ import annotations

import string

from medsft.errors import UserError
from medsft.tasks.base import Example, Task, render


def cue_template(template: str) -> str:
    """The template from the start of the line holding its last {field}: that field and the answer cue stay whole
    when a long prompt is shortened; earlier fields may be cut from the left."""
    offset, last = 0, None
    for literal, field_name, spec, conversion in string.Formatter().parse(template):
        offset += len(literal)
        if field_name is not None:
            last = offset
            offset += len("{" + field_name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}")
    if last is None:
        return template
    return template[template.rfind("\n", 0, last) + 1 :]


class Template(Task):
    name = "template"
    options = ("prompt_template", "completion_template", "chat", "system_prompt")

    def __init__(self, spec):
        super().__init__(spec)
        if not spec.prompt_template or not spec.completion_template:
            raise UserError("task template needs prompt_template and completion_template, e.g. "
                            "prompt_template: \"Question: {question}\\nAnswer:\" and completion_template: \" {answer}\"")

    def row(self, raw, key):
        render(self.spec.prompt_template, raw, "prompt_template")  # KeyError names a field the row lacks
        render(self.spec.completion_template, raw, "completion_template")
        return super().row(raw, key)

    def example(self, row):
        prompt = render(self.spec.prompt_template, row, "prompt_template")
        completion = render(self.spec.completion_template, row, "completion_template")
        if self.spec.chat:  # TRL's conversational "messages": trained on the assistant turn only
            system = [{"role": "system", "content": self.spec.system_prompt}] if self.spec.system_prompt else []
            return Example(messages=[*system, {"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])
        return Example(prompt, completion, cue=render(cue_template(self.spec.prompt_template), row, "prompt_template"))
