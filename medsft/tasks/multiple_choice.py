"""Multiple-choice exams declared in YAML: question, options (a mapping, a list or several columns), the answer (a
label, a 0-based index or the option's text), the labels and the prompt. Scored by the log-likelihood of each label
after the prompt; trained on the answer's label (optionally with the option text or an explanation).

medqa, medmcqa and mmlu are presets: the same machinery with lm-evaluation-harness's prompt for each."""

from __future__ import annotations

import string
from typing import Any

from medsft.tasks.base import Task, render

LETTERS = tuple(string.ascii_uppercase)


def or_list(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def option_lines(options: dict[str, str]) -> str:
    return "".join(f"{label}. {text}\n" for label, text in options.items())


class MultipleChoice(Task):
    name = "multiple_choice"
    options = ("prompt_style", "calibrate", "calibration_file", "prompt_template", "question_field", "options_field", "option_fields",
               "answer_field", "choice_labels", "include_option_text", "explanation_field", "chat", "system_prompt")
    choices = True
    seen: list[str]

    def __init__(self, spec):
        super().__init__(spec)
        self.allowed = list(spec.choice_labels or LETTERS)
        self.seen = list(spec.choice_labels or [])

    def row(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        spec = self.spec
        question = raw[spec.question_field]
        if spec.option_fields:
            texts = [raw[f] for f in spec.option_fields]
            options = dict(zip(self.allowed, texts))
        else:
            given = raw[spec.options_field]
            if isinstance(given, dict):
                for label in given:
                    if label not in self.allowed:
                        raise ValueError(f"option key {label!r} is not among the choices {', '.join(self.allowed[:8])}"
                                         f"{'...' if len(self.allowed) > 8 else ''} (choice_labels)")
                options = {label: given[label] for label in self.allowed if label in given}
            elif isinstance(given, list):
                if len(given) > len(self.allowed):
                    raise ValueError(f"{len(given)} options but {len(self.allowed)} choice_labels")
                options = dict(zip(self.allowed, given))
            else:
                raise ValueError(f"{spec.options_field} must be a mapping of label: text or a list of options")
        if spec.option_fields and len(spec.option_fields) > len(self.allowed):
            raise ValueError(f"{len(spec.option_fields)} option_fields but {len(self.allowed)} choice_labels")
        if len(options) < 2:
            raise ValueError(f"a question needs at least 2 options, got {len(options)}")
        options = {label: str(text) for label, text in options.items()}
        row = {**raw, "id": str(raw["id"]) if raw.get("id") is not None else key, "question": str(question),
               "options": options, "answer": self._answer(raw[spec.answer_field], options)}
        if spec.explanation_field:
            row["explanation"] = str(raw[spec.explanation_field])
        return row

    def _answer(self, value: Any, options: dict[str, str]) -> str:
        labels = list(options)
        if isinstance(value, bool):
            raise ValueError(f"answer {value!r} is not one of the options ({', '.join(labels)})")
        if isinstance(value, int):
            if 0 <= value < len(labels):
                return labels[value]
        elif isinstance(value, str):
            if value.strip() in options:
                return value.strip()
            by_text = [label for label, text in options.items() if text.strip() == value.strip()]
            if by_text:
                return by_text[0]
        raise ValueError(f"answer {value!r} is not one of the options ({', '.join(labels)}, or a 0-based index, or an option's text)")

    def prepare(self, rows):
        present = {label for row in rows for label in row["options"]}
        self.seen = [label for label in self.allowed if label in present or label in self.seen]
        return rows

    def labels(self):
        return self.seen or self.allowed[:4]

    def row_labels(self, row):
        return list(row["options"])

    def gold(self, row):
        return row.get("answer")

    def answer_options(self, row):
        return row["options"]

    def continues(self):
        return self.spec.include_option_text or bool(self.spec.explanation_field)

    def prompt(self, row: dict) -> tuple[str, str]:
        """(prompt, the part of it truncation must keep): the whole question and its options."""
        if self.spec.prompt_template:
            fields = {**row, "options": option_lines(row["options"]), "labels": or_list(list(row["options"]))}
            text = render(self.spec.prompt_template, fields, "prompt_template")
            return text, text
        if self.spec.prompt_style == "lm_eval":
            return self.lm_eval_prompt(row)
        labels = list(row["options"])
        text = f"Question: {row['question']}\n{option_lines(row['options'])}Answer ({or_list(labels)}):"
        return text, text

    def lm_eval_prompt(self, row: dict) -> tuple[str, str]:
        """lm-evaluation-harness medqa_4options doc_to_text, character for character."""
        text = f"Question: {row['question']}\n{option_lines(row['options'])}Answer:"
        return text, text

    def example(self, row):
        prompt, cue = self.prompt(row)
        completion = self.continuation(row["answer"])
        if self.spec.include_option_text:
            completion += ". " + row["options"][row["answer"]]
        if self.spec.explanation_field and row.get("explanation"):
            completion += "\n" + row["explanation"]
        return self.formatted(prompt, completion, cue)


class MedQA(MultipleChoice):
    name = "medqa"  # MedQA-USMLE, 4 options; lm-eval task medqa_4options


class MedMCQA(MultipleChoice):
    name = "medmcqa"

    def lm_eval_prompt(self, row):
        """lm-evaluation-harness medmcqa doc_to_text, character for character."""
        text = f"Question: {row['question']}\nChoices:\n{option_lines(row['options'])}Answer:"
        return text, text


class MMLU(MultipleChoice):
    name = "mmlu"  # lm-eval's mmlu prompt, the subject named in a header line

    def lm_eval_prompt(self, row):
        subject = str(row.get("subject", "")).replace("_", " ")
        header = f"The following are multiple choice questions (with answers) about {subject}.\n\n" if subject else ""
        body = f"{row['question'].strip()}\n{option_lines(row['options'])}Answer:"
        return header + body, body
