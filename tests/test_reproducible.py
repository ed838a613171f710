"""Same recipe, same seed, same run: every kind of run gives the same losses step by step on the CPU."""

import pytest
import torch

from medsft.training import fit
from medsft.training import prepare
from medsft.recipe.parser import parse_recipe

from test_resume import KINDS


def losses(recipe_path, *overrides):
    recipe = parse_recipe([str(recipe_path), *overrides])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("kind", KINDS)
def test_two_runs_with_one_seed_log_the_same_losses(write_recipe, kind):
    import torch

    path = write_recipe(**{"max_steps": 4, "logging_steps": 1, "bf16": False, "synthetic_size": 80, **KINDS[kind]})
    first = losses(path)
    torch.manual_seed(12345)  # whatever an earlier step left in the global generators
    assert losses(path) == first and len(first) == 4
    assert losses(path, "--seed", "1") != first


def test_the_environment_is_recorded_and_a_version_change_is_one_line(write_recipe, tmp_path):
    import json

    from medsft.runs import provenance

    recipe = parse_recipe([str(write_recipe())])
    environment = provenance.record(recipe)
    assert set(environment) == {"versions", "device", "seed", "recipe_sha256"} and environment["seed"] == 0
    assert environment["versions"]["torch"].startswith("2.")
    assert environment["device"] == "cpu" if not torch.cuda.is_available() else environment["device"].startswith("cuda: ")
    provenance.write(str(tmp_path), environment)
    assert provenance.read(tmp_path) == environment and provenance.mismatch(environment) is None
    assert provenance.record(parse_recipe([str(write_recipe(learning_rate=1e-2))]))["recipe_sha256"] != environment["recipe_sha256"]
    old = json.loads(json.dumps(environment))
    old["versions"]["transformers"] = "4.0.0"
    line = provenance.mismatch(old)
    assert "\n" not in line and f"transformers 4.0.0 -> {environment['versions']['transformers']}" in line


@pytest.mark.slow
def test_eval_of_a_run_from_other_versions_warns(write_recipe, tmp_path):
    import json

    from conftest import run_cli

    recipe = write_recipe(eval_after_train=False, max_test_samples=6)
    assert run_cli(recipe).returncode == 0
    out = tmp_path / "out"
    environment = json.loads((out / "environment.json").read_text())
    environment["versions"]["peft"] = "0.1.0"
    (out / "environment.json").write_text(json.dumps(environment))
    proc = run_cli("eval", out)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "peft 0.1.0 ->" in warnings[0]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["run"]["environment"]["versions"]["peft"] == "0.1.0"
