"""A run is loaded as it was trained (dtype, attention) by eval, generate, serve and merge; run folders are portable
(no hardware defaults in recipe.yaml) and cannot switch on trust_remote_code by themselves."""

import json

import pytest
import torch
import yaml
from conftest import run_cli

from medsft.models import inference, loading
from medsft.recipe import hardware, parser
from medsft.runs import run_folder
from medsft.recipe.parser import parse_recipe
from medsft.runs.run_folder import parse_run


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
    model, _ = loading.load_trained(parse_run(bf16_run, ["--output_dir", str(bf16_run)]), bf16_run)
    assert _dtypes(model) == {torch.bfloat16}  # eval
    assert model.config._attn_implementation == "eager"
    loaded = inference.load(str(bf16_run))  # generate and serve
    assert _dtypes(loaded.model) == {torch.bfloat16} and loaded.model.config._attn_implementation == "eager"
    result = run_cli("merge", bf16_run, tmp_path / "merged")
    assert result.returncode == 0, result.stderr[-2000:]
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "merged" / "model.safetensors").values()} == {torch.bfloat16}


def test_a_run_folder_records_no_hardware_default(bf16_run):
    saved = yaml.safe_load((bf16_run / run_folder.RECIPE_FILE).read_text())
    assert "use_cpu" not in saved and "bf16" not in saved and saved["dtype"] == "bfloat16"
    recorded = yaml.safe_load((bf16_run / run_folder.HARDWARE_FILE).read_text())
    # recorded apart: a CPU machine sets use_cpu, a CUDA machine nothing of the kind
    assert recorded.get("use_cpu", False) is not torch.cuda.is_available()


def test_the_reading_machine_derives_its_own_device_setting(bf16_run, monkeypatch):
    path = bf16_run / run_folder.RECIPE_FILE
    saved = yaml.safe_load(path.read_text())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse_recipe([str(path)]).training.use_cpu is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    merged, machine, replaced = parser.settings(path, saved, {})
    assert "use_cpu" not in merged  # a CPU run resumed on a GPU machine trains on the GPU
    assert hardware.hardware_defaults({"use_peft": True}) == {"dtype": "bfloat16"}  # LoRA: frozen base in bf16
    assert hardware.hardware_defaults({"use_peft": False}) == {}  # a full fine-tune keeps float32 master weights


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    """CUDA faked present, on a pre-Ampere card (a T4: no bfloat16)."""
    for name, value in (("is_available", lambda: True), ("is_bf16_supported", lambda *a, **k: False),
                        ("get_device_name", lambda *a: "Tesla T4"), ("set_device", lambda *a: None), ("device_count", lambda: 1)):
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(hardware, "_SAID", set())


@pytest.mark.parametrize("recipe, extra, bf16, fp16, dtype, line", [
    ("pubmedqa_lora.yaml", [], False, True, "float16", "training in float16 mixed precision (fp16: true); set fp16: false to train in float32"),
    ("pubmedqa_lora.yaml", ["--fp16", "false"], False, False, None, None),
    ("pubmedqa_qlora.yaml", [], False, True, "float16", "training in float16 mixed precision (fp16: true) instead of the "
                                                         "recipe's bf16: true, dtype: bfloat16; set fp16: false to train in float32"),
    ("pubmedqa_qlora.yaml", ["--fp16", "false"], False, False, "float32", "training in float32 instead of the recipe's bf16: true, dtype: bfloat16"),
])
def test_a_gpu_without_bf16_trains_in_fp16_or_float32_with_one_line(gpu_without_bf16, capsys, recipe, extra, bf16, fp16, dtype, line):
    from conftest import ROOT

    parsed = parse_recipe([str(ROOT / "recipes" / recipe), *extra])
    assert (parsed.training.bf16, parsed.training.fp16) == (bf16, fp16)
    assert parsed.model.dtype == dtype or (dtype is None and parsed.model.dtype in (None, "float32"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ([f"medsft: Tesla T4 has no bfloat16: {line}"] if line else [])
    given = yaml.safe_load((ROOT / "recipes" / recipe).read_text())
    assert {k: parsed.resolved().get(k) for k in ("bf16", "dtype")} == {k: given.get(k) for k in ("bf16", "dtype")}


def test_trust_remote_code_from_a_run_folder_needs_the_flag(bf16_run, tmp_path, capsys):
    run = tmp_path / "downloaded"
    run.mkdir()
    saved = yaml.safe_load((bf16_run / run_folder.RECIPE_FILE).read_text())
    (run / run_folder.RECIPE_FILE).write_text(yaml.safe_dump({**saved, "trust_remote_code": True}))
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
    assert result.stderr.strip().splitlines()[-1].endswith("usage: python -m medsft merge RUN_DIR OUT_DIR [--dtype D] [--device_map M] [--trust_remote_code]")
    assert json.loads((bf16_run / "adapter_config.json").read_text())  # the run is untouched


def _copy_with(run, tmp_path, **keys):
    """The run copied, its recipe.yaml carrying `keys` as a run trained elsewhere would."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = yaml.safe_load((copy / run_folder.RECIPE_FILE).read_text())
    (copy / run_folder.RECIPE_FILE).write_text(yaml.safe_dump({**saved, "output_dir": str(copy), **keys}))
    return copy


@pytest.mark.slow
def test_loading_a_run_needs_none_of_its_training_machinery(bf16_run, tmp_path):
    """A run trained with report_to: tensorboard (not installed here), DeepSpeed and fp16 on a GPU loads for
    eval, generate and merge all the same: those keys configure training only."""
    run = _copy_with(bf16_run, tmp_path, report_to="tensorboard", deepspeed="accelerate_configs/deepspeed/zero3.json",
                     fp16=True, tf32=True)
    if not torch.cuda.is_available():  # training the same recipe still checks them
        assert "fp16: fp16 mixed precision needs a CUDA GPU" in run_cli(run / run_folder.RECIPE_FILE).stderr
    loaded = inference.load(str(run))
    assert _dtypes(loaded.model) == {torch.bfloat16}
    assert run_cli("eval", run, "--max_test_samples", "4", "--sample_count", "0").returncode == 0
    assert run_cli("generate", run, "Is it?", "--max_new_tokens", "2").returncode == 0
    assert run_cli("merge", run, tmp_path / "merged").returncode == 0


@pytest.mark.slow
def test_a_qlora_run_merges_on_a_cpu_and_says_where_it_loads(bf16_run, tmp_path):
    run = _copy_with(bf16_run, tmp_path, load_in_4bit=True, bnb_4bit_quant_type="nf4")
    proc = run_cli("merge", run, tmp_path / "merged")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    if not torch.cuda.is_available():
        proc = run_cli("eval", run)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
            f"medsft: error: {run} was trained on a 4-bit base (bitsandbytes), which loads on a CUDA GPU only; on this "
            "machine merge it first (python -m medsft merge RUN OUT_DIR) and use the merged model")
