"""`python -m medsft generate` as a user runs it, on the tiny model and on a tiny trained run."""

import pytest

from conftest import run_cli
from test_cli_errors import one_line_error

pytestmark = pytest.mark.slow


def test_greedy_generation_streams_the_same_text_as_the_library(tiny_model):
    from transformers import AutoModelForCausalLM

    from medsft.generation.completion import generate
    from medsft.models.tokenizer import load_tokenizer

    proc = run_cli("generate", tiny_model, "Patient presents with fever", "--temperature", "0", "--max_new_tokens", "8")
    assert proc.returncode == 0, proc.stderr
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model).eval(), load_tokenizer(str(tiny_model))
    expected = generate(model, tok, ["Patient presents with fever"], max_new_tokens=8)[0]
    assert proc.stdout.strip() == expected.strip() and expected.strip()


def test_sampling_is_reproducible_by_seed(tiny_model):
    runs = [run_cli("generate", tiny_model, "IMPRESSION:", "--temperature", "1.0", "--seed", seed, "--max_new_tokens", "12")
            for seed in ("3", "3", "4")]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout != runs[2].stdout


def test_pubmedqa_answer_from_a_trained_run(write_recipe, tmp_path):
    recipe = write_recipe(max_steps=2, eval_after_train=False, include_long_answer=True)
    assert run_cli(recipe).returncode == 0
    abstract = tmp_path / "abstract.txt"
    abstract.write_text("Heart rate 131 beats per minute at rest in a patient with fever.")
    proc = run_cli("generate", tmp_path / "out", "--task", "pubmedqa", "--question", "Is the patient tachycardic?",
                   "--context_file", abstract, "--max_new_tokens", "6", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] in ("answer: yes", "answer: no", "answer: maybe")
    probabilities = [float(line.split("=")[1]) for line in lines[1:4]]
    assert [line.split("(")[1].split(")")[0] for line in lines[1:4]] == ["yes", "no", "maybe"]
    assert sum(probabilities) == pytest.approx(1.0, abs=2e-3)
    assert max(probabilities) == probabilities[["yes", "no", "maybe"].index(lines[0].split(": ")[1])]


def test_a_question_continues_as_the_server_continues_the_same_prompt(write_recipe, tmp_path):
    """`generate RUN --question Q --seed S --temperature T` samples the explanation after the chosen answer; the server
    given the same prompt (as token ids), seed and settings answers the same text: one generation path."""
    from fastapi.testclient import TestClient

    from medsft.data import encoding
    from medsft.data.prompts import choice_spans
    from medsft.evaluation.scoring import score_choices
    from medsft.models import inference
    from medsft.serving import server
    from medsft.commands.generate import question_task, read_context

    recipe = write_recipe(max_steps=2, eval_after_train=False, include_long_answer=True)
    assert run_cli(recipe).returncode == 0
    question = "Is the patient tachycardic?"
    proc = run_cli("generate", tmp_path / "out", "--question", question, "--seed", "5", "--temperature", "0.8",
                   "--max_new_tokens", "12")
    assert proc.returncode == 0, proc.stderr
    answer, explanation = proc.stdout.splitlines()[0], "\n".join(proc.stdout.splitlines()[4:])
    loaded = inference.load(str(tmp_path / "out"))
    task = question_task(loaded.spec)
    row = task.cli_row(question, read_context(None))
    room = loaded.max_length or loaded.context
    chosen = score_choices(loaded.model, loaded.tokenizer, task, [row], room)[0]["prediction"]
    assert answer == f"answer: {chosen}"
    span = choice_spans(encoding.Encoder(loaded.tokenizer, room), task, row)[task.row_labels(row).index(chosen)]
    reply = TestClient(server.create_app(loaded)).post("/v1/completions", json={
        "prompt": span.ids[: span.stop], "seed": 5, "temperature": 0.8, "max_tokens": 12})
    assert reply.status_code == 200, reply.text
    assert explanation == reply.json()["choices"][0]["text"] and explanation.strip()


def test_chat_prompt_is_rendered_as_training_renders_it(tiny_chat_model):
    from transformers import AutoModelForCausalLM

    from medsft.data.encoding import chat_ids
    from medsft.generation.completion import generate
    from medsft.models.tokenizer import load_tokenizer

    proc = run_cli("generate", tiny_chat_model, "Fever?", "--chat", "--temperature", "0", "--max_new_tokens", "6")
    assert proc.returncode == 0, proc.stderr
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_chat_model).eval(), load_tokenizer(str(tiny_chat_model))
    ids = chat_ids(tok, [{"role": "user", "content": "Fever?"}], add_generation_prompt=True)
    assert proc.stdout.strip() == generate(model, tok, [ids], max_new_tokens=6)[0].strip()


@pytest.mark.parametrize("args,expected", [
    (("{model}", "hello", "--chat"), "medsft: error: --chat needs a chat template and {model} has none"),
    (("{model}", "--question", "Q?", "--task", "report"), "medsft: error: --question needs a choice task and report is not one"),
    (("{missing}", "hello"), "medsft: error: {missing} holds no model"),
    (("{model}", "hello", "--temperature", "-1"), "medsft: error: temperature must be between 0 and 5, got -1.0"),
    (("{model}", "hello", "--max_new_tokens", "0"), "medsft: error: max_new_tokens must be at least 1, got 0"),
    (("{model}", "hello", "--top_kk", "3"), "medsft: error: unrecognized arguments: --top_kk 3"),
    (("{model}", "--task", "pubmedqa", "--question", "Q?", "--context_file", "{missing}/a.txt"),
     "medsft: error: context_file not found: {missing}/a.txt"),
])
def test_bad_generate_input_is_one_line(tiny_model, tmp_path, args, expected):
    missing = tmp_path / "nothing"
    missing.mkdir()
    fill = {"missing": missing, "model": tiny_model}
    line = one_line_error(run_cli("generate", *(a.format(**fill) for a in args)))
    assert line.startswith(expected.format(**fill))


def test_question_prompts_are_shortened_to_the_runs_max_length(write_recipe, tmp_path, monkeypatch, capsys):
    """The run trained on rows of at most max_length tokens: `generate --question` scores within the same length (the
    abstract shortened from the left, the question kept), not within the model's own context."""
    from medsft.commands import generate
    from medsft.evaluation import scoring

    recipe = write_recipe(max_steps=1, eval_after_train=False, max_length=96)
    assert run_cli(recipe).returncode == 0
    abstract = tmp_path / "abstract.txt"
    abstract.write_text("Heart rate 131 beats per minute at rest in a patient with fever. " * 40)
    lengths, scored = [], scoring.scored_targets

    def recording(model, sequences, *args, **kwargs):
        lengths.extend(len(s) for s in sequences)
        return scored(model, sequences, *args, **kwargs)

    monkeypatch.setattr(scoring, "scored_targets", recording)
    assert generate.main([str(tmp_path / "out"), "--question", "Is the patient tachycardic?", "--context_file", str(abstract)]) == 0
    assert capsys.readouterr().out.startswith("answer: ")
    assert lengths and max(lengths) <= 96
