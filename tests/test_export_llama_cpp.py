"""The exported files in llama.cpp itself (through llama-cpp-python, where it is installed: it is not a medsft
dependency, and builds llama.cpp from source): for the tiny model of each released family, trained on plain prompts
and through its chat template, llama.cpp tokenizes the run's rendered texts into the run's tokens, its next-token
log-probabilities are the run's within 1e-2 with the same most likely token at >= 99% of positions, and it takes the
run's end-of-turn token as an end of generation."""

import json

import pytest

import released
from medsft.__main__ import main

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install llama-cpp-python)")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not released.available(), reason=f"released chat templates absent: {released.TEMPLATES}")]


def in_llama_cpp(path, run, n_ctx=2048):
    """(tokens the same on each rendered text, largest log-probability difference, top-1 agreement, eot is an end)."""
    import numpy as np
    import torch

    from medsft.data.datasets import load
    from medsft.evaluation import export_check
    from medsft.models import inference
    from medsft.recipe import mixture
    from medsft.runs import records, run_folder

    loaded = inference.load(str(run), False, dequantize=True, dtype="float32")
    model, tokenizer = loaded.model.merge_and_unload(), loaded.tokenizer
    datasets = load(mixture.specs(*(lambda r: (r.script, r.training))(run_folder.parse_run(run, []))), records.read_ids(str(run)))
    llm = llama_cpp.Llama(str(path), logits_all=True, n_ctx=n_ctx, verbose=False)
    same = [tokenizer(text, add_special_tokens=special)["input_ids"] == llm.tokenize(text.encode(), add_bos=special, special=True)
            for text, special in export_check.rendered(tokenizer, datasets[0], 8)]
    largest, agree, positions = 0.0, 0, 0
    for ids in export_check.texts(tokenizer, datasets[0], 8, loaded.max_length):
        llm.reset()
        llm.eval(ids)
        theirs = torch.log_softmax(torch.tensor(np.array(llm.scores[: len(ids)]))[:-1], -1)
        with torch.no_grad():
            mine = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
        target = torch.tensor(ids[1:])[:, None]
        largest = max(largest, (mine.gather(-1, target) - theirs.gather(-1, target)).abs().max().item())
        agree, positions = agree + int((mine.argmax(-1) == theirs.argmax(-1)).sum()), positions + len(ids) - 1
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eot = llama_cpp.llama_vocab_eot(vocab)
    return same, largest, agree / positions, eot, llama_cpp.llama_vocab_is_eog(vocab, eot)


LONGROPE = {"original_max_position_embeddings": 256, "rope_scaling": {
    "rope_type": "longrope", "short_factor": [1.0, 1.5, 2.5, 4.0], "long_factor": [2.0, 4.0, 8.0, 16.0]}}


@pytest.mark.parametrize("name", [*released.FAMILIES, "phi3-longrope"])
def test_llama_cpp_reads_the_exported_run_as_the_run(write_recipe, tmp_path, name):
    """(Queries and keys sharpened: see released.sharpened. Phi-3 with Phi-3.5's long-context scaling: llama.cpp takes the
    short factors, as the run did on texts shorter than the original context, where its own context is no longer
    than that.)"""
    from medsft.data.templates import end_of_turn

    family = released.FAMILIES[name.split("-")[0]]
    if name == "phi3-longrope":
        family = released.Released(**{**vars(family), "config_keys": LONGROPE})
    base = released.sharpened(released.build(family, tmp_path / name, hidden=32))
    for chat in (False, True):
        run = tmp_path / f"{name}-{'chat' if chat else 'plain'}"
        recipe = write_recipe(f"{run.name}.yaml", model_name_or_path=str(base), output_dir=str(run), chat=chat,
                              max_steps=2, max_test_samples=8, sample_count=0, max_length=192, learning_rate=1e-3)
        assert main([str(recipe)]) == 0
        out = tmp_path / f"{run.name}.gguf"
        assert main(["export", str(run), str(out), "--check", "0"]) == 0
        assert json.loads(out.with_suffix(".check.json").read_text())["tokens"]["same"] == 1.0
        same, largest, top1, eot, eog = in_llama_cpp(out, run, 256 if name == "phi3-longrope" else 2048)
        assert all(same), (run.name, same)
        assert largest <= 1e-2 and top1 >= 0.99, (run.name, largest, top1)
        from transformers import AutoTokenizer

        assert eot == end_of_turn(AutoTokenizer.from_pretrained(run)) and eog
