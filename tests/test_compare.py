"""`medsft compare`: runs scored on the same items the same way, each pair tested (McNemar, paired bootstrap) with
Holm-adjusted p-values; folders whose protocols or items differ are refused in one line. And the protocol each
evaluation records: what makes its number comparable."""

import json

import pytest

from medsft.__main__ import main
from medsft.evaluation import stats

pytestmark = pytest.mark.slow
KEYS = {"max_test_samples": 24, "sample_count": 0, "max_steps": 3}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    """Three LoRA runs on the same synthetic notes (two learning rates, and a third seed), and one scored with
    lm-eval's prompt, one on fewer items."""
    import yaml

    folder = tmp_path_factory.mktemp("compare")
    made = {}
    for name, keys in {"lr_low": {"learning_rate": 1e-4}, "lr_high": {"learning_rate": 1e-2},
                       "seed_1": {"learning_rate": 1e-2, "seed": 1},
                       "lm_eval": {"learning_rate": 1e-2, "prompt_style": "lm_eval"},
                       "fewer": {"learning_rate": 1e-2, "max_test_samples": 12}}.items():
        recipe = folder / f"{name}.yaml"
        recipe.write_text(yaml.safe_dump({
            "model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 80,
            "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
            "per_device_train_batch_size": 4, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
            "seed": 0, "output_dir": str(folder / name), **KEYS, **keys}))
        assert main([str(recipe)]) == 0
        made[name] = folder / name
    return made


def test_each_evaluation_records_its_protocol(runs):
    [evaluation] = json.loads((runs["lr_low"] / "eval_results.json").read_text())["evaluations"]
    p = evaluation["protocol"]
    assert p["task"] == "pubmedqa" and p["labels"] == ["yes", "no", "maybe"] and p["items"] == 24
    assert p["prompt_style"] == "medsft" and p["scoring"] == "likelihood" and p["decision"] == "argmax"
    assert p["few_shot"] == 0 and p["max_length"] == 256 and p["precision"] in ("float32", "bfloat16")
    assert len(p["test_ids_sha256"]) == len(p["prompts_sha256"]) == len(p["weights_sha256"]) == 64
    other = json.loads((runs["lr_high"] / "eval_results.json").read_text())["evaluations"][0]["protocol"]
    assert {k for k in p if p[k] != other[k]} == {"weights_sha256"}  # trained differently, scored alike
    lm_eval = json.loads((runs["lm_eval"] / "eval_results.json").read_text())["evaluations"][0]["protocol"]
    assert lm_eval["prompt_style"] == "lm_eval" and lm_eval["prompts_sha256"] != p["prompts_sha256"]


def test_compare_prints_each_pair_with_holm_adjusted_p_values(runs, capsys):
    folders = [str(runs[n]) for n in ("lr_low", "lr_high", "seed_1")]
    assert main(["compare", *folders]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pubmedqa: pubmedqa on 24 test items" in out and "p (Holm)" in out
    assert main(["compare", *folders, "--json"]) == 0
    [evaluation] = json.loads(capsys.readouterr().out)["evaluations"]
    assert list(evaluation["models"]) == ["lr_low", "lr_high", "seed_1"]
    accuracy = [p for p in evaluation["pairs"] if p["metric"] == "accuracy"]
    assert [(p["first"], p["second"]) for p in accuracy] == [("lr_low", "lr_high"), ("lr_low", "seed_1"), ("lr_high", "seed_1")]
    assert [p["p_holm"] for p in accuracy] == stats.holm([p["p"] for p in accuracy])
    assert all(p["p_holm"] >= p["p"] for p in evaluation["pairs"])
    # the difference is the runs' own: the second's accuracy less the first's, from their predictions
    scored = {n: json.loads((runs[n] / "eval_results.json").read_text())["evaluations"][0]["models"]["tuned"]["accuracy"]
              for n in ("lr_low", "lr_high")}
    assert accuracy[0]["delta"] == pytest.approx(scored["lr_high"] - scored["lr_low"])
    assert evaluation["models"]["lr_high"]["accuracy"]["value"] == scored["lr_high"]


@pytest.mark.parametrize("other, message", [
    ("lm_eval", "did not score pubmedqa (likelihood) alike: prompt_style is 'medsft' in one and 'lm_eval' in the other: the "
                "models read different prompts, and a model's score depends on the prompt it reads; their numbers are not "
                "comparable"),
    ("fewer", "scored different items of pubmedqa (likelihood) (13 of 24 not shared); compare evaluations of the same items"),
])
def test_compare_refuses_numbers_that_are_not_comparable(runs, capsys, other, message):
    assert main(["compare", str(runs["lr_low"]), str(runs[other])]) == 2
    assert capsys.readouterr().err.strip() == f"medsft: error: {runs['lr_low']} and {runs[other]} {message}"


def test_compare_refuses_a_folder_with_nothing_scored(runs, tmp_path, capsys):
    assert main(["compare", str(runs["lr_low"]), str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"medsft: error: {tmp_path} holds no eval_results.json: evaluate it first "
                                               f"(python -m medsft eval {tmp_path})")
    assert main(["compare", str(runs["lr_low"])]) == 2
    assert "compare needs at least two run or evaluation folders" in capsys.readouterr().err


def test_compare_refuses_a_folder_without_its_predictions_in_one_line(runs, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["lr_high"], copy)
    (copy / "predictions.jsonl").unlink()
    assert main(["compare", str(runs["lr_low"]), str(copy)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"medsft: error: {copy} holds eval_results.json but no predictions.jsonl, the per-item answers the paired tests "
        f"need: evaluate it again (python -m medsft eval {copy})")


def test_compare_across_tokenizers_says_why_the_numbers_differ_in_kind(runs, zoo_models, tmp_path, capsys):
    """Another model with another tokenizer, scored on the same items with the same prompt: refused, naming the
    tokenizer and why it matters (not a bare digest field)."""
    other = tmp_path / "llama3-base"
    assert main(["eval", str(runs["lr_low"] / "recipe.yaml"), "--model_name_or_path", str(zoo_models("llama3")),
                 "--output_dir", str(other)]) == 0
    capsys.readouterr()
    assert main(["compare", str(runs["lr_low"]), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medsft: error: {runs['lr_low']} and {other} did not score pubmedqa (likelihood) alike: "
                          "tokenizer_sha256 is "), err
    assert err.endswith("in the other: the text was split into different tokens, so each item is a different sequence: "
                        "per-token likelihoods and perplexities measure different things, and prompts are shortened at "
                        "different places; their numbers are not comparable"), err


def test_holm_adjusts_step_down():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])


def test_eval_writes_where_output_dir_says_and_leaves_the_run_as_it_was(runs, tmp_path, capsys):
    """`eval RUN --output_dir OTHER` writes its evaluation into OTHER (a folder `compare` reads like any) and leaves
    RUN's own evaluation untouched; OTHER holding something else is refused in one line, nothing written."""
    run = runs["lr_high"]
    before = {name: (run / name).read_bytes() for name in ("eval_results.json", "predictions.jsonl")}
    other = tmp_path / "again"
    assert main(["eval", str(run), "--output_dir", str(other)]) == 0
    assert f"written to {other}" in capsys.readouterr().out
    assert {name: (run / name).read_bytes() for name in before} == before
    again = json.loads((other / "eval_results.json").read_text())["evaluations"][0]
    first = json.loads(before["eval_results.json"])["evaluations"][0]
    assert again["models"]["tuned"]["accuracy"] == first["models"]["tuned"]["accuracy"]
    assert main(["compare", str(run), str(other), "--json"]) == 0  # the same weights, scored alike
    assert json.loads(capsys.readouterr().out)["evaluations"][0]["pairs"][0]["delta"] == 0
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["eval", str(run), "--output_dir", str(taken)]) == 2
    assert capsys.readouterr().err.strip() == (f"medsft: error: output_dir {taken} holds something other than a medsft "
                                               "evaluation; name a new or empty folder")
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
