"""`medsft cv`: dev scores of each fold, out-of-fold offsets, and a test split that is used once, with them."""

import json

import pytest

from conftest import run_cli, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture
def folded(tmp_path):
    rows = [{"pubid": str(i), "question": f"Is finding {i} abnormal?", "context": {"contexts": [f"Finding {i} was seen."]},
             "long_answer": "It was.", "final_decision": ["yes", "no", "maybe"][i % 3]} for i in range(40)]
    data = write_jsonl(tmp_path / "items.jsonl", rows)
    folds = [[str(i) for i in range(f * 6, f * 6 + 6)] for f in range(5)]  # 30 items in 5 folds of 6
    (tmp_path / "splits.json").write_text(json.dumps({"test": [str(i) for i in range(30, 40)], "folds": folds}))
    return data


def test_cv_reports_each_fold_and_fits_offsets_out_of_fold(write_recipe, folded, tmp_path):
    recipe = write_recipe(dataset_name=str(folded), max_steps=2)
    proc = run_cli("cv", recipe, "--folds", "3")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "out-cv" / "cv_results.json").read_text())
    assert [f["fold"] for f in results["folds"]] == [0, 1, 2] and all(f["items"] == 6 for f in results["folds"])
    assert results["tuned"]["pooled"]["items"] == 18 and results["base"]["pooled"]["items"] == 18
    assert set(results["tuned"]["pooled"]["offsets"]) == {"yes", "no", "maybe"}
    crossed = results["tuned"]["pooled"]["with_offsets_cross_fitted"]
    assert crossed["ci"]["accuracy"][0] <= crossed["accuracy"] <= crossed["ci"]["accuracy"][1]
    oof = [json.loads(line) for line in (tmp_path / "out-cv" / "oof_predictions.jsonl").read_text().splitlines()]
    assert [item["fold"] for item in oof] == [0] * 6 + [1] * 6 + [2] * 6
    assert all(set(item["tuned_loglik"]) == set(item["base_loglik"]) == {"yes", "no", "maybe"} for item in oof)
    mean = sum(f["accuracy"] for f in results["folds"]) / 3
    assert results["tuned"]["accuracy"]["mean"] == pytest.approx(mean)
    assert "cross-validation: 3 of 5 folds" in proc.stdout
    assert not (tmp_path / "out").exists()  # the folds train in out-cv/fold-N: the recipe's own run is untouched
    # the test split, scored once, decided with the out-of-fold offsets
    proc = run_cli(recipe, "--calibration_file", tmp_path / "out-cv" / "cv_results.json")
    assert proc.returncode == 0, proc.stderr
    [evaluation] = json.loads((tmp_path / "out" / "eval_results.json").read_text())["evaluations"]
    assert evaluation["n"] == 10
    assert evaluation["models"]["tuned"]["calibration"]["offsets"] == results["tuned"]["pooled"]["offsets"]
    assert evaluation["models"]["base"]["calibration"]["offsets"] == results["base"]["pooled"]["offsets"]


def test_cv_needs_folds(write_recipe):
    proc = run_cli("cv", write_recipe())
    assert proc.returncode == 2 and "cv needs a split with folds" in proc.stderr


def test_a_signal_stops_the_whole_cross_validation(write_recipe, folded, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    recipe = write_recipe(dataset_name=str(folded), max_steps=400)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medsft", "cv", str(recipe), "--folds", "3"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "out-cv" / "fold-0" / "recipe.yaml").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    time.sleep(3)  # into the training loop
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    assert "stopped by SIGTERM in fold 0; 0 fold(s) done, nothing summarized" in " ".join(stdout.split())
    assert not (tmp_path / "out-cv" / "fold-1").exists() and not (tmp_path / "out-cv" / "cv_results.json").exists()


def test_cv_of_a_model_from_scratch_has_no_base_and_finishes(write_recipe, folded, tmp_path):
    recipe = write_recipe(dataset_name=str(folded), max_steps=2, model_name_or_path="scratch-gpt2", use_peft=False,
                          scratch_config={"vocab_size": 300, "n_layer": 1, "n_head": 2, "n_embd": 16})
    proc = run_cli("cv", recipe, "--folds", "2")
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "out-cv" / "cv_results.json").read_text())
    assert results["base"]["pooled"] is None and results["tuned"]["pooled"]["items"] == 12
    oof = [json.loads(line) for line in (tmp_path / "out-cv" / "oof_predictions.jsonl").read_text().splitlines()]
    assert len(oof) == 12 and not any("base_loglik" in item for item in oof)
