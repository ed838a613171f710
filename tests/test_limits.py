"""Every numeric setting medsft passes on is range-checked up front: one line, exit 2, nothing written."""

import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medsft.recipe import ranges as limits
from medsft.__main__ import main
from medsft.recipe.parser import RecipeParser

HINTS = RecipeParser().hints
WHOLE = {key for key in limits.RANGES if "int" in str(HINTS[key]) and "float" not in str(HINTS[key])}


def valid(key, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if key in WHOLE and not isinstance(value, int):
        return False
    return math.isfinite(value) and limits.RANGES[key][0](value)


VALUES = st.one_of(
    st.integers(min_value=-(2**40), max_value=0), st.integers(min_value=2**32, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=6), st.lists(st.integers(), max_size=2),
    st.sampled_from([0, 1, -1, 0.5, 1.0, 1.5, 2**31, "1e-4", "nan", "inf", None]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(limits.RANGES)), value=VALUES)
def test_out_of_range_or_wrongly_typed_values_are_one_line(capsys, tiny_model, key, value):
    assume(value is not None and not (isinstance(value, str) and _parses_valid(key, value)) and not valid(key, value))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(yaml.safe_dump({"model_name_or_path": str(tiny_model), "dataset_name": "synthetic",
                                          "output_dir": str(out), "report_to": "none", key: value}))
        code = main([str(recipe)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("medsft: error: "), (key, value, err)
        assert key in err[0]
        assert not out.exists()


def _parses_valid(key, text: str) -> bool:
    """YAML strings that medsft reads as numbers (1e-4 has no dot, so YAML 1.1 keeps it a string)."""
    try:
        number = float(text)
    except ValueError:
        return False
    return key not in WHOLE and valid(key, number)


@pytest.mark.parametrize("argv, expected", [
    (["--lora_r", "0"], "lora_r must be a whole number of at least 1, got 0"),
    (["--learning_rate", "-1"], "learning_rate must be a number above 0, got -1.0"),
    (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be a whole number of at least 1, got 0"),
    (["--seed", "1180591620717411303424"], "seed must be a whole number from 0 to 4294967295"),
])
def test_the_issues_examples_stop_before_output_dir_is_written(capsys, write_recipe, tmp_path, argv, expected):
    assert main([str(write_recipe()), *argv]) == 2
    assert capsys.readouterr().err.strip() .startswith(f"medsft: error: {expected}")
    assert not (tmp_path / "out").exists()


def test_eval_refuses_an_output_location_that_is_a_file_before_evaluating(capsys, write_recipe, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    assert main(["eval", str(write_recipe()), "--output_dir", str(target)]) == 2
    assert "holds something other than a medsft evaluation" in capsys.readouterr().err
    assert target.read_text() == "mine"
