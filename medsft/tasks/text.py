"""Language modelling (TRL's "text" format): every token of the row's text is trained; long rows are split."""

from __future__ import annotations

from medsft.tasks.base import Example, Task


class Text(Task):
    name = "text"
    options = ("dataset_text_field",)

    def row(self, raw, key):
        field = self.spec.dataset_text_field
        if raw.get(field) is None:
            raise KeyError(field)
        if not isinstance(raw[field], str):
            raise ValueError(f"{field} must be text, got {type(raw[field]).__name__}")
        return super().row(raw, key)

    def example(self, row):
        text = row[self.spec.dataset_text_field]
        return Example(completion=text, text=True) if text.strip() else None
