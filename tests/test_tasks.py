import json

import pytest

from medsft.tasks import medical_report as report
from medsft.tasks import pubmedqa

from conftest import PUBMEDQA, needs_pubmedqa

ORIGINAL = {
    "QUESTION": "Does aspirin reduce stroke risk?",
    "CONTEXTS": ["Aspirin was given to 100 patients.", "Strokes fell by half."],
    "LABELS": ["METHODS", "RESULTS"],
    "MESHES": ["Aspirin"],
    "YEAR": "2001",
    "LONG_ANSWER": "Aspirin reduced strokes.",
    "final_decision": "yes",
}


def to_hub(pmid, item):
    """The hub schema (qiaojin/PubMedQA, pqa_labeled) of one original-release item."""
    return {
        "pubid": int(pmid),
        "question": item["QUESTION"],
        "context": {"contexts": item["CONTEXTS"], "labels": item["LABELS"], "meshes": item.get("MESHES", [])},
        "long_answer": item["LONG_ANSWER"],
        "final_decision": item["final_decision"],
    }


def test_lm_eval_prompt_is_exact():
    row = pubmedqa.normalize(ORIGINAL, "123")
    assert pubmedqa.prompt(row, "lm_eval") == (
        "Abstract: Aspirin was given to 100 patients.\nStrokes fell by half.\n"
        "Question: Does aspirin reduce stroke risk?\nAnswer:"
    )
    assert pubmedqa.format_row(row, "lm_eval") ["completion"] == " yes"


def test_long_answer_follows_the_decision():
    row = pubmedqa.normalize(ORIGINAL, "123")
    assert pubmedqa.format_row(row, include_long_answer=True)["completion"] == " yes. Aspirin reduced strokes."


def test_both_schemas_give_identical_rows_handmade():
    a = pubmedqa.normalize(ORIGINAL, "123")
    b = pubmedqa.normalize(to_hub("123", ORIGINAL))
    assert a == b
    for style in ("medsft", "lm_eval"):
        assert pubmedqa.format_row(a, style, True) == pubmedqa.format_row(b, style, True)


@needs_pubmedqa
def test_both_schemas_give_identical_rows_on_all_1000_items():
    items = json.loads(PUBMEDQA.read_text())
    for pmid, item in items.items():
        a, b = pubmedqa.normalize(item, pmid), pubmedqa.normalize(to_hub(pmid, item))
        assert pubmedqa.format_row(a, "medsft", True) == pubmedqa.format_row(b, "medsft", True)
        assert a["id"] == b["id"] == pmid


def test_label_outside_choices_is_refused():
    with pytest.raises(ValueError, match="'perhaps' is not one of yes/no/maybe"):
        pubmedqa.normalize({**ORIGINAL, "final_decision": "perhaps"})


def test_report_section_split_does_not_match_inside_longer_header():
    text = "PREOPERATIVE DIAGNOSIS: Hernia.POSTOPERATIVE DIAGNOSIS: Hernia.DIAGNOSIS: Inguinal hernia, right.PLAN: Repair."
    example = report.format_row({"text": text}, "DIAGNOSIS:")
    assert example == {"prompt": text[: text.index("Inguinal") - 1], "completion": " Inguinal hernia, right."}
    assert report.format_row({"text": "no headers here"}, "IMPRESSION:") is None
    assert report.format_row({"text": text}) == {"prompt": "", "completion": text}


MCQ = {"question": "A 30-year-old man has a cough. ", "options": {"A": "asthma", "B": "flu", "C": "TB", "D": "cold"},
       "answer_idx": "C", "subject": "clinical_knowledge"}


@pytest.mark.parametrize("task, expected", [
    # lm-evaluation-harness medqa_4options (preprocess_medqa.doc_to_text)
    ("medqa", "Question: A 30-year-old man has a cough. \nA. asthma\nB. flu\nC. TB\nD. cold\nAnswer:"),
    # lm-evaluation-harness medmcqa (utils_medmcqa.doc_to_text)
    ("medmcqa", "Question: A 30-year-old man has a cough. \nChoices:\nA. asthma\nB. flu\nC. TB\nD. cold\nAnswer:"),
    # lm-evaluation-harness mmlu: the subject's description, then "{{question.strip()}}\nA. ..." (_default_template_yaml)
    ("mmlu", "The following are multiple choice questions (with answers) about clinical knowledge.\n\n"
             "A 30-year-old man has a cough.\nA. asthma\nB. flu\nC. TB\nD. cold\nAnswer:"),
])
def test_lm_eval_multiple_choice_prompts_are_exact(task, expected):
    from medsft.recipe.keys import DataSpec
    from medsft.tasks import get

    preset = get(DataSpec(task=task, prompt_style="lm_eval"))
    example = preset.example(preset.row(MCQ, "0"))
    assert example.prompt == expected and example.completion == " C"


def test_multiple_choice_answers_as_label_index_or_text():
    from medsft.recipe.keys import DataSpec
    from medsft.tasks import get

    task = get(DataSpec(task="multiple_choice"))
    for answer in ("C", 2, "TB"):
        assert task.row({**MCQ, "answer_idx": answer}, "0")["answer"] == "C"
    columns = get(DataSpec(task="multiple_choice", option_fields=["opa", "opb", "opc"], answer_field="cop", options_field=None))
    row = columns.row({"question": "Q?", "opa": "x", "opb": "y", "opc": "z", "cop": 1}, "0")
    assert row["options"] == {"A": "x", "B": "y", "C": "z"} and row["answer"] == "B"
    assert columns.example(row).prompt == "Question: Q?\nA. x\nB. y\nC. z\nAnswer (A, B or C):"


@pytest.mark.parametrize("sizes, n", [((25, 25, 25, 25), 10), ((970, 10, 10, 10), 10), ((5, 3), 7), ((1, 1, 1), 2),
                                      ((40, 30, 20, 10), 99), ((3, 3, 3), 9)])
def test_a_stratified_sample_has_exactly_n_rows_and_every_label_n_allows(sizes, n):
    from medsft.tasks import stratified_sample

    rows = [{"id": f"{label}-{i}", "label": label} for label, size in enumerate(sizes) for i in range(size)]
    picked = stratified_sample(rows, n, 0, lambda r: r["label"])
    counts = [sum(r["label"] == label for r in picked) for label in range(len(sizes))]
    assert len(picked) == n == sum(counts) and len({r["id"] for r in picked}) == n
    assert all(c >= 1 for c in counts) or n < len(sizes)
    assert all(c <= size for c, size in zip(counts, sizes))
    if all(n * size >= sum(sizes) for size in sizes):  # no label lifted to its one row: each within a row of its share
        assert all(abs(c - n * size / sum(sizes)) < 1 for c, size in zip(counts, sizes))
