"""What a task is: a row's schema, its formatting (the one function training and evaluation share), its choices
and scoring when it is a classification, and its split rules. Everything task-specific lives in its module."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from medsft.errors import UserError
from medsft.tasks import answers

# DataFields keys that only some tasks read; a task refuses those it does not use rather than ignoring them.
TASK_OPTIONS = (
    "prompt_style", "calibrate", "calibration_file", "include_long_answer", "section", "prompt_template", "completion_template", "chat", "system_prompt",
    "question_field", "options_field", "option_fields", "answer_field", "choice_labels", "include_option_text",
    "explanation_field", "dataset_text_field",
)


@dataclass
class Example:
    """One formatted row. `prompt` (masked) + `completion` (trained): strings, or message lists (conversational).
    `messages` instead: a whole conversation. `cue`: the end of a string prompt that truncation must never cut
    (the question and the answer cue); `text`: language modelling, long rows are split rather than cut."""

    prompt: str | list[dict] = ""
    completion: str | list[dict] = ""
    messages: list[dict] | None = None
    cue: str = ""
    text: bool = False

    def flat(self, prompt_only: bool = False) -> str:
        """The example's words as one text (no system turn, no template): the prompt alone, or all of it."""
        parts = self.messages if self.messages is not None else [self.prompt] if prompt_only else [self.prompt, self.completion]
        if self.messages is not None and prompt_only:
            parts = [m for m in self.messages if m["role"] == "user"]
        flat = [m for p in parts for m in (p if isinstance(p, list) else [p])]
        return "\n".join(m if isinstance(m, str) else str(m.get("content") or "") for m in flat
                         if isinstance(m, str) or m.get("role") != "system")


class Task:
    name: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()  # the TASK_OPTIONS this task reads
    choices: ClassVar[bool] = False  # a classification scored by the log-likelihood of each choice
    pairwise: ClassVar[bool] = False  # its rows are preference pairs, scored as pairs too
    split_sizes: ClassVar[tuple[float, float]] = (0.05, 0.1)  # (dev, test) carved where the data has neither

    def __init__(self, spec):
        self.spec = spec
        defaults = {f.name: f.default for f in fields(spec)}
        for key in TASK_OPTIONS:
            if key not in self.options and getattr(spec, key) != defaults[key]:
                raise UserError(f"{key} does nothing for task {self.name}; remove it (or choose a task that reads it)")
        if spec.system_prompt and not spec.chat:
            raise UserError("system_prompt needs chat: true (it is the system turn of a conversation)")

    # --- rows ---------------------------------------------------------------------------------------------------
    def row(self, raw: dict[str, Any], key: str) -> dict[str, Any]:
        """A source row in the task's schema, with an "id". KeyError(field) for a missing field, ValueError(why)."""
        return {**raw, "id": str(raw["id"]) if raw.get("id") is not None else key}

    def prepare(self, rows: list[dict]) -> list[dict]:
        """All rows at once, after `row` (e.g. to drop duplicates)."""
        return rows

    def example(self, row: dict[str, Any]) -> Example | None:
        """The row formatted; None when the task cannot format it (it is skipped and counted)."""
        raise NotImplementedError

    def samples(self, rows: list[dict], n: int, seed: int, prompts: list[str] | None = None) -> list[dict]:
        """[{input, prompt, gold?}] for the sample generations: the recipe's prompts, else a stratified handful of
        test items (input: the prompt as the model gets it, a string or messages; prompt: its text; gold: the
        reference), else the opening words of test texts."""
        if n <= 0:
            return []
        if prompts:
            return [{"input": p, "prompt": p} for p in prompts[:n]]
        out = []
        for example in (self.example(r) for r in stratified_sample(rows, n, seed, self.gold)):
            if example is None:
                continue
            if example.messages is not None:
                last = max((i for i, m in enumerate(example.messages) if m["role"] == "assistant"), default=None)
                if last:
                    out.append({"input": example.messages[:last], "prompt": example.messages[last - 1]["content"],
                                "gold": example.messages[last]["content"]})
            elif example.text:
                opening = " ".join(example.completion.split()[:12])
                out.append({"input": opening, "prompt": opening})
            elif isinstance(example.prompt, list):
                out.append({"input": example.prompt, "prompt": example.prompt[-1]["content"],
                            "gold": "".join(m["content"] for m in example.completion)})
            else:
                out.append({"input": example.prompt, "prompt": example.prompt, "gold": example.completion})
        return out

    def content(self, row: dict) -> str:
        """What a test item is, for the contamination check: a choice item's question, context and options (its
        prompt's words), any other item's whole text."""
        example = self.example(row)
        return "" if example is None else example.flat(prompt_only=self.choices)

    def synthetic(self, n: int, seed: int) -> list[dict]:
        raise UserError(f"dataset_name: synthetic is built for the pubmedqa and report tasks, not {self.name}")

    # --- classification -----------------------------------------------------------------------------------------
    def labels(self) -> list[str]:
        """Every label, in the order of the metrics tables."""
        raise NotImplementedError

    def row_labels(self, row: dict) -> list[str]:
        """The labels this row offers."""
        return self.labels()

    def answer_options(self, row: dict) -> dict[str, str]:
        """{label: text} of the row's choices, as a generated reply may name them (a yes/no/maybe's text is its label)."""
        return {label: label for label in self.row_labels(row)}

    def answer(self, row: dict, reply: str) -> answers.Answer:
        """What a generated reply answers to the row (strict, lenient or neither): evaluation's and GRPO's reading."""
        return answers.extract(reply, self.answer_options(row))

    def continuation(self, label: str) -> str:
        """What follows the prompt when `label` is the answer (scored, and the start of the trained completion): after
        a string prompt " yes", in a chat the assistant's turn opening with "yes"."""
        return label if self.spec.chat else " " + label

    def choice_example(self, row: dict, label: str) -> Example:
        """The row's example with `label` as the whole answer: what a choice is scored on (its prompt is training's)."""
        example = self.example(row)
        answer = self.continuation(label)
        if isinstance(example.prompt, list):
            return replace(example, completion=[{"role": "assistant", "content": answer.lstrip()}])
        return replace(example, completion=answer)

    def formatted(self, prompt: str, completion: str, cue: str) -> Example:
        """The prompt and completion as strings or, with `chat`, as the user's turn (after the system prompt) and the
        assistant's reply, through the model's chat template."""
        if not self.spec.chat:
            return Example(prompt, completion, cue=cue)
        system = [{"role": "system", "content": self.spec.system_prompt}] if self.spec.system_prompt else []
        return Example([*system, {"role": "user", "content": prompt}], [{"role": "assistant", "content": completion.lstrip()}],
                       cue=cue)

    def gold(self, row: dict) -> str | None:
        return None

    # --- preference pairs ---------------------------------------------------------------------------------------
    def pairs(self, row: dict, everyone: bool, rng: random.Random) -> list[tuple[Example, Example]]:
        """(chosen, rejected) examples of the row for preference training: the key's answer as SFT trains it against
        each other option as the whole answer (`everyone`), or against one drawn with `rng`."""
        if not self.choices:
            raise UserError(f"task {self.name} has no answer key to build preference pairs from; use task: preference "
                            "(prompt, chosen, rejected) or a choice task (pubmedqa, multiple_choice, ...)")
        chosen, key = self.example(row), self.gold(row)
        others = [label for label in self.row_labels(row) if label != key]
        if chosen is None or not others:
            return []
        return [(chosen, self.choice_example(row, label)) for label in (others if everyone else [rng.choice(others)])]

    def unpaired(self, row: dict, everyone: bool, rng: random.Random) -> list[tuple[Example, bool]]:
        """(example, desirable) for KTO: the key's answer desirable, the other options (or one) undesirable."""
        pairs = self.pairs(row, everyone, rng)
        return [(pairs[0][0], True), *[(rejected, False) for _, rejected in pairs]] if pairs else []

    def continues(self) -> bool:
        """Whether the trained completion goes on after the choice (an explanation the model can write)."""
        return False

    def cli_row(self, question: str, context: str) -> dict:
        """A row for `medsft generate --question`."""
        raise UserError(f"task {self.name} does not answer --question")

    # --- splits -------------------------------------------------------------------------------------------------
    def official_split(self) -> dict[str, Any] | None:
        """{"test": ids, "folds": [ids, ...]} known for this task's data, used where the data has no test split."""
        return None


def stratified_sample(rows: list[dict], n: int, seed: int, label=lambda r: None) -> list[dict]:
    """Exactly n rows keeping the label proportions (a test file may be sorted by label: never take its first n).
    Each label gets its share rounded by largest remainder, and at least one row while n allows, so that a rare
    label never vanishes from a small sample."""
    if n >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(label(r), []).append(r)
    ordered = sorted(groups.items(), key=lambda kv: str(kv[0]))
    counts = apportion([len(group) for _, group in ordered], n)
    picked = [r for (_, group), k in zip(ordered, counts) for r in rng.sample(group, k)]
    rng.shuffle(picked)
    return picked


def apportion(sizes: list[int], n: int) -> list[int]:
    """n (at most sum(sizes)) shared among groups in proportion to their sizes: each group its floor, at least one
    where n covers every group, the rest by largest remainder; never more than a group holds."""
    total = sum(sizes)
    quotas = [n * size / total for size in sizes]
    floor = 1 if n >= len(sizes) else 0
    counts = [min(size, max(floor, int(q))) for size, q in zip(sizes, quotas)]
    while sum(counts) > n:  # the minimum of one outgrew n: take back from the groups furthest above their quota
        j = max((i for i, c in enumerate(counts) if c > floor), key=lambda i: counts[i] - quotas[i])
        counts[j] -= 1
    while sum(counts) < n:
        j = max((i for i, c in enumerate(counts) if c < sizes[i]), key=lambda i: quotas[i] - counts[i])
        counts[j] += 1
    return counts


def render(template: str, row: dict, what: str) -> str:
    """`template` with {field} placeholders filled from the row (a list of texts renders one item a line);
    KeyError(field) when the row lacks one."""
    try:
        return template.format_map(_Fields(row))
    except (ValueError, IndexError) as e:
        raise UserError(f"{what} {template!r} is not a valid template: {e}") from None


class _Fields(dict):
    def __getitem__(self, key):
        value = super().__getitem__(key)
        return "\n".join(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value

    def __missing__(self, key):
        raise KeyError(key)
