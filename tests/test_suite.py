"""`medsft eval ... --suite medical`: four benchmarks in one command, never scoring what the run trained on."""

import json

import pytest

from conftest import run_cli, write_jsonl

pytestmark = pytest.mark.slow


def mcq(prefix, n, subject=None):
    rows = [{"question": f"{prefix} question {i}?", "options": {"A": "aspirin", "B": "heparin", "C": "insulin", "D": "morphine"},
             "answer_idx": "ABCD"[i % 4]} for i in range(n)]
    return [{**r, "subject": subject} for r in rows] if subject else rows


@pytest.fixture
def suite_data(tmp_path):
    root = tmp_path / "data"
    (root / "mcq").mkdir(parents=True)
    (root / "pubmedqa").mkdir()
    items = {str(100 + i): {"QUESTION": f"Does drug {i} work?", "CONTEXTS": [f"Trial {i}."], "LABELS": ["RESULTS"],
                            "LONG_ANSWER": "It did.", "final_decision": ["yes", "no", "maybe"][i % 3]} for i in range(40)}
    (root / "pubmedqa" / "ori_pqal.json").write_text(json.dumps(items))
    write_jsonl(root / "mcq" / "medqa.jsonl", mcq("usmle", 12))
    write_jsonl(root / "mcq" / "medmcqa.jsonl", mcq("mcqa", 30))
    write_jsonl(root / "mcq" / "mmlu.jsonl", mcq("mmlu", 8, "clinical_knowledge"))
    return root


def test_the_medical_suite_scores_four_benchmarks_with_intervals(write_recipe, suite_data, tmp_path):
    proc = run_cli("eval", write_recipe(), "--suite", "medical", "--suite_data", suite_data, "--prompt_style", "lm_eval")
    assert proc.returncode == 0, proc.stderr
    folder = next((tmp_path / "eval").iterdir()) / "suite-medical"
    evaluations = json.loads((folder / "eval_results.json").read_text())["evaluations"]
    assert [(e["name"], e["n"]) for e in evaluations] == [("pubmedqa", 20), ("medqa", 12), ("medmcqa", 30), ("mmlu", 8)]
    for e in evaluations:
        low, high = e["models"]["base"]["ci"]["accuracy"]
        assert low <= e["models"]["base"]["accuracy"] <= high and e["prompt_style"] == "lm_eval"
    assert "summary" in proc.stdout


def test_a_runs_suite_leaves_out_what_it_trained_on(write_recipe, suite_data, tmp_path):
    recipe = write_recipe(task="medmcqa", dataset_name=str(suite_data / "mcq" / "medmcqa.jsonl"), test_split_size=6,
                          eval_split_size=4, eval_after_train=False)
    assert run_cli(recipe).returncode == 0
    out = tmp_path / "out"
    proc = run_cli("eval", out, "--suite", "medical", "--suite_data", suite_data)
    assert proc.returncode == 0, proc.stderr
    assert "medmcqa: 24 items left out: the run trained or tuned on them" in " ".join(proc.stdout.split())
    evaluations = {e["name"]: e for e in json.loads((out / "suite-medical" / "eval_results.json").read_text())["evaluations"]}
    recorded = json.loads((out / "split_ids.json").read_text())["medmcqa"]
    scored = {json.loads(line)["id"] for line in (out / "suite-medical" / "predictions.jsonl").read_text().splitlines()
              if json.loads(line)["dataset"] == "medmcqa"}
    assert evaluations["medmcqa"]["n"] == 6 and scored == set(recorded["test"])
    assert set(evaluations["medmcqa"]["models"]) == {"base", "tuned"}


def test_the_suite_reads_local_data_only_where_named(tmp_path, monkeypatch, suite_data):
    """suite_data, else $MEDSFT_DATA, else the hub ids: never a folder found relative to the installed code."""
    from medsft.evaluation import suites as suite
    from medsft.errors import UserError

    monkeypatch.delenv("MEDSFT_DATA", raising=False)
    assert suite.specs("medical", None, "medsft")[0].dataset_name == "qiaojin/PubMedQA"
    monkeypatch.setenv("MEDSFT_DATA", str(suite_data))
    assert suite.specs("medical", None, "medsft")[0].dataset_name == str(suite_data / "pubmedqa" / "ori_pqal.json")
    monkeypatch.setenv("MEDSFT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"^MEDSFT_DATA .*nowhere is not a folder; give the folder holding pubmedqa/ and mcq/$"):
        suite.specs("medical", None, "medsft")
