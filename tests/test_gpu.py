"""On a CUDA machine: a LoRA run trains on the GPU and is loaded back there with its frozen base in bf16, generate
and serve build their tensors on the model's device, and a QLoRA run goes back onto the NF4 base it trained
against (merge dequantizes it, with one line). Skipped where there is no GPU: CI and this project's CPU machines."""

import json
import os

import pytest
import torch
import yaml

from conftest import run_cli

from medsft.models import inference
from medsft.runs import run_folder
from medsft.generation.completion import generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trained(tmp_path_factory, tiny_model, **extra) -> "os.PathLike":
    out = tmp_path_factory.mktemp("gpu-run")
    recipe = {"model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 40,
              "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
              "max_steps": 2, "per_device_train_batch_size": 4, "report_to": "none", "eval_strategy": "no",
              "save_strategy": "no", "max_test_samples": 8, "sample_count": 1, "sample_max_new_tokens": 4,
              "output_dir": str(out / "run"), **extra}
    path = out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli(path)
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "run"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model):
    return _trained(tmp_path_factory, tiny_model)


def test_a_lora_run_is_loaded_on_the_gpu_with_its_base_in_bf16(lora_run):
    assert not yaml.safe_load((lora_run / run_folder.HARDWARE_FILE).read_text()).get("use_cpu")
    loaded = inference.load(str(lora_run))
    assert {p.device.type for p in loaded.model.parameters()} == {"cuda"}
    if torch.cuda.is_bf16_supported():
        assert {p.dtype for n, p in loaded.model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    ids = loaded.tokenizer("Question: is it?", add_special_tokens=False)["input_ids"]
    [text] = generate(loaded.model, loaded.tokenizer, [ids], max_new_tokens=4)  # tensors made on the model's device
    assert isinstance(text, str)


def test_the_server_answers_from_the_gpu(lora_run):
    from test_server import post, start

    url, proc = start(lora_run, threads=None)
    try:
        status, body = post(url + "/v1/completions", {"prompt": "Question: is it?", "max_tokens": 4})
        assert status == 200, body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_qlora_run_goes_back_onto_its_nf4_base_and_merges_dequantized(tmp_path_factory, tiny_model, tmp_path):
    bnb = pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    run = _trained(tmp_path_factory, tiny_model, load_in_4bit=True, bnb_4bit_quant_type="nf4", dtype="bfloat16")
    loaded = inference.load(str(run))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())
    result = run_cli("merge", run, tmp_path / "merged")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dequantized to bfloat16" in result.stderr
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(tmp_path / "merged" / "model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "merged" / "config.json").read_text()).get("quantization_config") is None


@pytest.mark.parametrize("trainer", ["dpo", "kto"])
def test_a_qlora_preference_stage_trains_from_a_qlora_run(tmp_path_factory, tiny_model, trainer):
    """A DPO or KTO stage continuing a QLoRA SFT run: its base loaded in NF4 by medsft, the adapter continued."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    quantized = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "dtype": "bfloat16"}
    start = _trained(tmp_path_factory, tiny_model, **quantized)
    stage = _trained(tmp_path_factory, tiny_model, trainer=trainer, model_name_or_path=str(start), **quantized)
    assert run_folder.holds_adapter(stage)


def test_an_export_on_the_gpu_reads_back_beside_the_run(lora_run, tmp_path):
    """The run loads on the GPU; the file read back is put beside it and each model given its inputs on its own
    device (the read-back was on the CPU, fed the GPU's ids)."""
    result = run_cli("export", lora_run, tmp_path / "g.gguf", "--check", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    check = json.loads((tmp_path / "g.check.json").read_text())
    assert check["next_tokens"]["top1_agreement"] >= 0.95 and check["items"]["pubmedqa"]["n"] == 8
