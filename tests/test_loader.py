"""A run is loaded as it was trained (dtype, attention) by eval, generate, serve and merge; run folders are portable
(no hardware defaults in recipe.yaml) and cannot switch on trust_remote_code by themselves."""

import json

import pytest
import torch
import yaml
from conftest import run_cli

from medsft import config, inference, train
from medsft.config import parse_recipe, parse_run


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_model):
    """A LoRA run trained with dtype: bfloat16 and eager attention (2 steps on the tiny model)."""
    out = tmp_path_factory.mktemp("bf16-run")
    recipe = {"model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 40,
              "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "dtype": "bfloat16",
              "attn_implementation": "eager", "max_length": 256, "max_steps": 2, "per_device_train_batch_size": 4,
              "report_to": "none", "eval_strategy": "no", "save_strategy": "no", "eval_after_train": False,
              "output_dir": str(out / "run")}
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli(path)
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "run"


def _dtypes(model) -> set:
    """The base's weights (peft keeps adapter weights in float32, in training too)."""
    return {p.dtype for name, p in model.named_parameters() if "lora_" not in name}


def test_eval_generate_serve_and_merge_load_the_recipe_dtype_and_attention(bf16_run, tmp_path):
    model, _ = train.load_trained(parse_run(bf16_run, ["--output_dir", str(bf16_run)]), bf16_run)
    assert _dtypes(model) == {torch.bfloat16}  # eval
    assert model.config._attn_implementation == "eager"
    loaded = inference.load(str(bf16_run))  # generate and serve
    assert _dtypes(loaded.model) == {torch.bfloat16} and loaded.model.config._attn_implementation == "eager"
    result = run_cli("merge", bf16_run, tmp_path / "merged")
    assert result.returncode == 0, result.stderr[-2000:]
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "merged" / "model.safetensors").values()} == {torch.bfloat16}


def test_a_run_folder_records_no_hardware_default(bf16_run):
    saved = yaml.safe_load((bf16_run / train.RECIPE_FILE).read_text())
    assert "use_cpu" not in saved and "bf16" not in saved and saved["dtype"] == "bfloat16"
    hardware = yaml.safe_load((bf16_run / train.HARDWARE_FILE).read_text())
    # recorded apart: a CPU machine sets use_cpu, a CUDA machine nothing of the kind
    assert hardware.get("use_cpu", False) is not torch.cuda.is_available()


def test_the_reading_machine_derives_its_own_device_setting(bf16_run, monkeypatch):
    path = bf16_run / train.RECIPE_FILE
    saved = yaml.safe_load(path.read_text())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_recipe([str(path)]).training.use_cpu is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    merged, hardware = config.settings(path, saved, {})
    assert "use_cpu" not in merged  # a CPU run resumed on a GPU machine trains on the GPU
    assert config.hardware_defaults({"use_peft": True}) == {"dtype": "bfloat16"}  # LoRA: frozen base in bf16
    assert config.hardware_defaults({"use_peft": False}) == {}  # a full fine-tune keeps float32 master weights


def test_trust_remote_code_from_a_run_folder_needs_the_flag(bf16_run, tmp_path, capsys):
    run = tmp_path / "downloaded"
    run.mkdir()
    saved = yaml.safe_load((bf16_run / train.RECIPE_FILE).read_text())
    (run / train.RECIPE_FILE).write_text(yaml.safe_dump({**saved, "trust_remote_code": True}))
    recipe = parse_run(run, ["--output_dir", str(run)])
    assert recipe.training.trust_remote_code is False
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"medsft: {run / 'recipe.yaml'} sets trust_remote_code, not honoured from a run folder; pass "
                   "--trust_remote_code true to run the model's own code"]
    assert parse_run(run, ["--output_dir", str(run), "--trust_remote_code", "true"]).training.trust_remote_code is True
    assert capsys.readouterr().err == ""


def test_merge_refuses_unknown_options(bf16_run, tmp_path):
    result = run_cli("merge", bf16_run, tmp_path / "m", "--force")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("usage: python -m medsft merge RUN_DIR OUT_DIR [--trust_remote_code]")
    assert json.loads((bf16_run / "adapter_config.json").read_text())  # the run is untouched
