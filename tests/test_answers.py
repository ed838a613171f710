"""Reading the answer out of a written reply: strict, lenient, unparseable (tasks/answers.py), as evaluation and the
GRPO rewards read it."""

import pytest

from medsft.tasks.answers import extract

OPTIONS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin", "D": "Vitamin K"}
YES_NO = {"yes": "yes", "no": "no", "maybe": "maybe"}


@pytest.mark.parametrize("reply, strict, lenient", [
    ("B", "B", "B"),
    ("B.", "B", "B"),
    ("(B)", "B", "B"),
    ("b", "B", "B"),
    ("B) Heparin", "B", "B"),
    ("B. Heparin.", "B", "B"),
    ("The answer is (B).", "B", "B"),
    ("Answer: B", "B", "B"),
    ("The correct answer is C. Warfarin", "C", "C"),
    ("**D**", "D", "D"),
    ("C\nWarfarin antagonises vitamin K.", "C", "C"),  # the first line states it; an explanation may follow
    ("Heparin", None, "B"),  # the option's text only
    ("Warfarin is the drug of choice here.", None, "C"),
    ("A or B", None, "A"),  # two options named: none stated, the first named
    ("It is B, not A", None, "B"),
    ("A patient on warfarin needs vitamin K", None, "C"),  # "A" the article is not option A
    ("<think>A? No: heparin.</think>\nD", "D", "D"),  # the reasoning block is skipped
    ("<think>Perhaps A, perhaps", None, None),  # still reasoning: no answer yet
    ("Aspirin does not reverse it.\nProtamine is not listed.\nThe answer is (B).", "B", "B"),  # reasoning, then a statement
    ("Aspirin does not reverse it.\nB", None, "A"),  # a last line without "the answer is" is not a statement
    ("", None, None),
    ("   \n", None, None),
    ("I do not know.", None, None),
    ("Question: what is the", None, None),
])
def test_multiple_choice_replies(reply, strict, lenient):
    answer = extract(reply, OPTIONS)
    assert (answer.strict, answer.lenient) == (strict, lenient)


@pytest.mark.parametrize("reply, strict, lenient", [
    ("yes", "yes", "yes"),
    ("Yes", "yes", "yes"),
    ("YES.", "yes", "yes"),
    ("No", "no", "no"),
    ("maybe", "maybe", "maybe"),
    ("The answer is no.", "no", "no"),
    ("Answer: Maybe", "maybe", "maybe"),
    ("Maybe, the evidence is mixed.", None, "maybe"),
    ("Yes or no", None, "yes"),
    ("<think>\n\n</think>\n\nno", "no", "no"),
    ("The study is unclear", None, None),
    ("Eyes are affected", None, None),  # "yes" inside a word is not an answer
    ("nothing", None, None),
])
def test_yes_no_maybe_replies(reply, strict, lenient):
    answer = extract(reply, YES_NO)
    assert (answer.strict, answer.lenient) == (strict, lenient)


def test_a_task_reads_its_own_options(tiny_model):
    from medsft import tasks
    from medsft.recipe.keys import DataSpec

    mc = tasks.get(DataSpec(task="multiple_choice"))
    row = mc.row({"question": "Reverses heparin?", "options": {"A": "Vitamin K", "B": "Protamine"}, "answer_idx": "B"}, "0")
    assert mc.answer(row, "Protamine sulfate").lenient == "B" and mc.answer(row, "(b)").strict == "B"
    pubmedqa = tasks.get(DataSpec(task="pubmedqa"))
    assert pubmedqa.answer({"final_decision": "yes"}, "No.").strict == "no"
