"""The exported files in llama.cpp itself (through llama-cpp-python, where it is installed: it is not a medsft
dependency, and builds llama.cpp from source): for the tiny model of each released family, trained on plain prompts
and through its chat template, llama.cpp tokenizes the run's rendered texts into the run's tokens, its next-token
log-probabilities are the run's within 1e-2 with the same most likely token at >= 99% of positions, and it takes the
run's end-of-turn token as an end of generation."""

import json
import sys

import pytest

import released
from conftest import ROOT
from medsft.__main__ import main

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python)")
sys.path.insert(0, str(ROOT / "bench"))
import llama_cpp_export as in_llama_cpp  # noqa: E402  (the bench's comparison: read_back's, llama.cpp in the file's place)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not released.available(), reason=f"released chat templates absent: {released.TEMPLATES}")]


@pytest.mark.parametrize("name", [*released.FAMILIES, "phi3-longrope"])
def test_llama_cpp_reads_the_exported_run_as_the_run(write_recipe, tmp_path, name):
    """(Queries and keys sharpened: see released.sharpened. Phi-3 with Phi-3.5's long-context scaling: llama.cpp takes the
    short factors, as the run did on texts shorter than the original context, where its own context is no longer
    than that.)"""
    from medsft.data.templates import end_of_turn

    family = released.FAMILIES[name.split("-")[0]]
    if name == "phi3-longrope":
        family = released.with_config(family, released.LONGROPE)
    base = released.sharpened(released.build(family, tmp_path / name, hidden=32))
    for chat in (False, True):
        run = tmp_path / f"{name}-{'chat' if chat else 'plain'}"
        recipe = write_recipe(f"{run.name}.yaml", model_name_or_path=str(base), output_dir=str(run), chat=chat,
                              max_steps=2, max_test_samples=8, sample_count=0, max_length=192, learning_rate=1e-3)
        assert main([str(recipe)]) == 0
        out = tmp_path / f"{run.name}.gguf"
        assert main(["export", str(run), str(out), "--check", "0"]) == 0
        assert json.loads(out.with_suffix(".check.json").read_text())["tokens"]["same"] == 1.0
        found = in_llama_cpp.check(in_llama_cpp.load(out, 256 if name == "phi3-longrope" else 2048), 8)
        assert found["tokens"] == {"texts": 8, "same": 1.0}, (run.name, found["tokens"])
        tokens = found["next_tokens"]
        assert tokens["max_logprob_difference"] <= 1e-2 and tokens["top1_agreement"] >= 0.99, (run.name, tokens)
        from transformers import AutoTokenizer

        assert found["eot"] == end_of_turn(AutoTokenizer.from_pretrained(run)) and found["eot_ends_generation"]
