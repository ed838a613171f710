"""Tasks, looked up by name: each one module holding its formatting, choices and scoring, and split rules."""

from medsft.tasks.base import Example, Task, stratified_sample
from medsft.tasks.chat import Messages
from medsft.tasks.multiple_choice import MMLU, MedMCQA, MedQA, MultipleChoice
from medsft.tasks.preference import Preference
from medsft.tasks.prompt_completion import PromptCompletion
from medsft.tasks.pubmedqa import PubMedQA
from medsft.tasks.medical_report import Report
from medsft.tasks.template import Template
from medsft.tasks.text import Text

TASKS: dict[str, type[Task]] = {
    t.name: t for t in (PubMedQA, Report, Text, PromptCompletion, Messages, Template, MultipleChoice, MedQA, MedMCQA, MMLU,
                        Preference)
}
NAMES = tuple(TASKS)


def get(spec) -> Task:
    """The task the spec names, configured by its options (a UserError for an option it does not read)."""
    return TASKS[spec.task](spec)


__all__ = ["Example", "NAMES", "TASKS", "Task", "get", "stratified_sample"]
