"""Every bad input exits 2 with one line on stderr naming what is wrong, and writes nothing."""

import pytest
import yaml

from conftest import run_cli


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
