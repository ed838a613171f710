"""Every bad input exits 2 with one line on stderr naming what is wrong, and writes nothing."""

import json

import pytest
import torch
import yaml

from conftest import ROOT, run_cli


def one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_key_with_did_you_mean(write_recipe):
    path = write_recipe(learning_rat=1e-4)
    assert one_line_error(run_cli(path)) == f"medsft: error: unknown key 'learning_rat' in {path}; did you mean 'learning_rate'?"


def test_unknown_cli_option(write_recipe):
    line = one_line_error(run_cli(write_recipe(), "--max_step", "3"))
    assert line == "medsft: error: unknown option '--max_step'; did you mean '--max_steps'?"


def test_wrong_value_type(write_recipe):
    path = write_recipe(learning_rate="fast")
    assert one_line_error(run_cli(path)) == f"medsft: error: key 'learning_rate' in {path} must be a number, got 'fast'"


def test_wrong_cli_value_type(write_recipe):
    assert "invalid int value: 'many'" in one_line_error(run_cli(write_recipe(), "--max_steps", "many"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "is empty; it must be a YAML mapping"),
        ("- a\n- b\n", "must be a YAML mapping of key: value, not a list"),
        ("task: pubmedqa\n  bad: [\n", "YAML syntax error in {path} at line 2"),
    ],
)
def test_bad_yaml(tmp_path, text, expected):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert expected.format(path=path) in one_line_error(run_cli(path))


def test_missing_recipe(tmp_path):
    assert one_line_error(run_cli(tmp_path / "nope.yaml")) == f"medsft: error: recipe file not found: {tmp_path / 'nope.yaml'}"


def test_missing_dataset_file(write_recipe, tmp_path):
    line = one_line_error(run_cli(write_recipe(dataset_name=str(tmp_path / "missing.jsonl"))))
    assert line == f"medsft: error: dataset file not found: {tmp_path / 'missing.jsonl'} (dataset_name); give a path to a file or folder"


def test_unknown_task(write_recipe):
    assert "key 'task' in" in one_line_error(run_cli(write_recipe(task="radiology")))


def test_missing_field_names_field_and_row(write_recipe, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "contexts": ["c"], "final_decision": "yes"}\n{"question": "q", "final_decision": "no"}\n')
    line = one_line_error(run_cli(write_recipe(dataset_name=str(data))))
    assert line == f"medsft: error: dataset {data} row 2 has no field 'contexts', which the pubmedqa task needs"


def test_label_outside_choices(write_recipe, tmp_path):
    data = tmp_path / "d.json"
    data.write_text('{"111": {"QUESTION": "q", "CONTEXTS": ["c"], "final_decision": "perhaps"}}')
    line = one_line_error(run_cli(write_recipe(dataset_name=str(data))))
    assert line == f"medsft: error: dataset {data} row 1 (id 111): final_decision 'perhaps' is not one of yes/no/maybe"


def test_max_length_too_small(write_recipe):
    assert "max_length 2 is too small to hold any answer" in one_line_error(run_cli(write_recipe(max_length=2)))


def test_output_dir_with_another_run_is_refused(write_recipe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "recipe.yaml").write_text(yaml.safe_dump({"task": "report", "model_name_or_path": "x"}))
    (out / "adapter_model.safetensors").write_bytes(b"precious")
    line = one_line_error(run_cli(write_recipe()))
    assert line.startswith(f"medsft: error: output_dir {out} holds a different run (task: 'report' there, 'pubmedqa' now)")
    assert (out / "adapter_model.safetensors").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["adapter_model.safetensors", "recipe.yaml"]


def test_output_dir_with_foreign_files_is_refused(write_recipe, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert "holds no medsft run" in one_line_error(run_cli(write_recipe()))
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_unreachable_hub_dataset_is_one_line(write_recipe):
    line = one_line_error(run_cli(write_recipe(dataset_name="nobody/no-such-dataset-medsft")))
    assert line.startswith("medsft: error: could not load dataset 'nobody/no-such-dataset-medsft' from the hub")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("key", ["load_in_4bit", "fp16"])
def test_cuda_only_option_on_cpu(write_recipe, key):
    line = one_line_error(run_cli(write_recipe(**{key: True})))
    assert line.startswith(f"medsft: error: {key}: ") and "needs a CUDA GPU and this machine has none" in line


def test_qlora_recipe_is_refused_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine can run the QLoRA recipe")
    line = one_line_error(run_cli(ROOT / "recipes" / "pubmedqa_qlora.yaml"))
    assert line == ("medsft: error: load_in_4bit: bitsandbytes 4-bit loading (QLoRA) needs a CUDA GPU and this machine "
                    "has none; remove load_in_4bit from the recipe")


def test_deepspeed_batch_size_contradicting_the_recipe(write_recipe, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 16}))
    line = one_line_error(run_cli(write_recipe(deepspeed=str(ds), per_device_train_batch_size=4)))
    assert line == (f"medsft: error: {ds} sets train_micro_batch_size_per_gpu to 16 but the recipe means 4 "
                    "(per_device_train_batch_size 4 x gradient_accumulation_steps 1 x 1 processes); set it to \"auto\" in the JSON")


def test_missing_deepspeed_config(write_recipe, tmp_path):
    line = one_line_error(run_cli(write_recipe(deepspeed=str(tmp_path / "zero9.json"))))
    assert line.startswith(f"medsft: error: deepspeed config not found: {tmp_path / 'zero9.json'}")


def test_4bit_with_zero3_is_refused():
    from medsft.recipe import refusals as distributed
    from medsft.errors import UserError

    settings = {"load_in_4bit": True, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                "deepspeed": str(ROOT / "accelerate_configs" / "deepspeed" / "zero3.json")}
    with pytest.raises(UserError, match=r"load_in_4bit cannot be combined with DeepSpeed ZeRO-3 \(.*zero3.json\)"):
        distributed.check(settings, cuda=True, world_size=2)
    distributed.check({**settings, "deepspeed": str(ROOT / "accelerate_configs" / "deepspeed" / "zero2.json")}, cuda=True, world_size=2)
