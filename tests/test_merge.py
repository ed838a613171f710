"""`python -m medsft merge`: the adapter folded into the base, loadable by transformers alone."""

import pytest
import torch

from conftest import run_cli
from test_cli_errors import one_line_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model):
    import yaml

    tmp = tmp_path_factory.mktemp("merge")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 60,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
        "max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "eval_strategy": "no",
        "save_strategy": "no", "report_to": "none", "output_dir": str(tmp / "run"), "eval_after_train": False,
    }))
    assert run_cli(recipe).returncode == 0
    return tmp / "run"


def test_merged_logits_equal_base_plus_adapter(trained_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from medsft.models import inference

    out = tmp_path / "merged"
    proc = run_cli("merge", trained_run, out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # transformers alone, no peft
    reference = inference.load(str(trained_run)).model
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.no_grad():
        expected, got = reference(ids).logits, merged(ids).logits
        base = reference.get_base_model()
        with reference.disable_adapter():
            plain = base(ids).logits
    assert (expected - plain).abs().max() > 1e-3  # the adapter does something
    assert torch.allclose(got, expected, atol=1e-4)


def test_merge_refuses_a_non_empty_out_dir(trained_run, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = one_line_error(run_cli("merge", trained_run, out))
    assert line == f"medsft: error: OUT_DIR {out} is not empty; merge writes into a new or empty folder and overwrites nothing"
    assert (out / "keep.txt").read_text() == "mine"
