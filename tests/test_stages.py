"""Stages: a LoRA SFT run, then a DPO (or GRPO) stage from its folder with no other step; the stage's reference is the
start exactly; its report holds base, start and tuned on the same items, the start's numbers those of the SFT run
itself; the chain is recorded and the stage loads as any run."""

import json

import pytest
import torch

from medsft.__main__ import main

pytestmark = pytest.mark.slow
KEYS = {"max_test_samples": 16, "sample_count": 0, "max_steps": 4}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model):
    """A LoRA SFT run on the synthetic notes (shared by the stages below)."""
    import yaml

    folder = tmp_path_factory.mktemp("sft")
    recipe = folder / "sft.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 80,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
        "per_device_train_batch_size": 4, "learning_rate": 5e-3, "logging_steps": 1, "save_strategy": "no",
        "report_to": "none", "seed": 0, "output_dir": str(folder / "run"), **KEYS}))
    assert main([str(recipe)]) == 0
    return folder / "run"


def predictions(folder, column):
    return {p["id"]: p[column] for p in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())}


def test_a_dpo_stage_from_a_lora_sft_run_reports_base_start_and_tuned(write_recipe, sft_run, tmp_path):
    recipe = write_recipe("dpo.yaml", trainer="dpo", model_name_or_path=str(sft_run), learning_rate=5e-3, **KEYS)
    assert main([str(recipe)]) == 0
    out = tmp_path / "out"
    [evaluation] = json.loads((out / "eval_results.json").read_text())["evaluations"]
    assert list(evaluation["models"]) == ["base", "start", "tuned"]
    assert {"tuned_vs_base", "tuned_vs_start"} <= set(evaluation["tests"])
    # the start is the SFT run itself: its numbers on the same items equal the SFT run's own evaluation
    sft_scores, start_scores = predictions(sft_run, "tuned_loglik"), predictions(out, "start_loglik")
    assert sft_scores.keys() == start_scores.keys()
    for item, scores in sft_scores.items():
        assert scores.keys() == start_scores[item].keys()
        assert all(abs(scores[c] - start_scores[item][c]) < 1e-6 for c in scores), item
    chain = json.loads((out / "chain.json").read_text())
    assert chain[0] == {"model": json.loads((sft_run / "adapter_config.json").read_text())["base_model_name_or_path"]}
    assert chain[1]["run"] == str(sft_run.resolve()) and chain[1]["adapter"] is True and len(chain[1]["recipe_sha256"]) == 64
    assert not (out / "ref").exists()  # TRL's frozen copy of the start is not the run's
    # the contamination check covers the earlier run's training rows too, and its protocol is recorded
    assert f"{sft_run.resolve()}: pubmedqa (train)" in evaluation["contamination"]["checked_against"]
    assert evaluation["contamination"]["training_rows"] == 2 * len(json.loads((sft_run / "split_ids.json").read_text())["pubmedqa"]["train"])
    assert main(["eval", str(out)]) == 0  # the stage loads as any run, and scores the start again
    again = json.loads((out / "eval_results.json").read_text())["evaluations"][0]
    assert again["models"] == evaluation["models"]


def test_the_reference_dpo_compares_against_is_the_start_exactly(write_recipe, sft_run):
    """The reference DPO uses (TRL's frozen copy of the continued adapter, as its compute_ref_log_probs switches to it)
    gives the SFT run's own logits, to the bit, and so its log-probabilities (to the rounding of TRL's chunked
    kernel); the policy starts there too."""
    from trl.trainer.utils import use_adapter

    from medsft.models import loading
    from medsft.recipe.parser import parse_recipe
    from medsft.runs import run_folder
    from medsft.training import fit, prepare

    recipe = parse_recipe([str(write_recipe("dpo.yaml", trainer="dpo", model_name_or_path=str(sft_run), **KEYS))])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    batch = next(iter(trainer.get_train_dataloader()))
    model, ids, attention = trainer.model.eval(), batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        chosen, rejected = trainer.compute_ref_log_probs(model, batch)
        with use_adapter(model, "ref"):
            reference = model(input_ids=ids, attention_mask=attention).logits.float()
        policy = model(input_ids=ids, attention_mask=attention).logits.float()
    start = loading.load_run(run_folder.parse_run(sft_run, ["--output_dir", str(sft_run)]), sft_run).eval()
    with torch.no_grad():
        logits = start(input_ids=ids, attention_mask=attention).logits.float()
    assert torch.equal(reference, logits) and torch.equal(policy, logits)
    per_token = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) * batch["completion_mask"][:, 1:]
    torch.testing.assert_close(torch.cat([chosen, rejected]), per_token.sum(1), atol=2e-3, rtol=1e-4)


def test_a_grpo_stage_from_a_lora_sft_run_trains_with_no_merge(write_recipe, sft_run, tmp_path):
    from safetensors.torch import load_file

    recipe = write_recipe("grpo.yaml", trainer="grpo", model_name_or_path=str(sft_run), num_generations=4,
                          max_completion_length=6, answer_max_new_tokens=6, **KEYS,
                          # a reward that differs between replies, so that the untrained replies still move the adapter
                          reward_funcs=["correctness", "rewards.reply_length"], reward_weights=[1.0, 0.01])
    assert main([str(recipe), "--trust_remote_code", "true"]) == 0
    out = tmp_path / "out"
    before, after = load_file(sft_run / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()  # the SFT run's adapter, continued
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert list(json.loads((out / "eval_results.json").read_text())["evaluations"][0]["models"]) == ["base", "start", "tuned"]


def test_a_stage_that_changes_the_adapters_settings_is_refused(write_recipe, sft_run, capsys):
    recipe = write_recipe("dpo.yaml", trainer="dpo", model_name_or_path=str(sft_run), **KEYS)
    assert main([str(recipe), "--lora_r", "8"]) == 2
    assert capsys.readouterr().err.strip() == (f"medsft: error: lora_r 8 differs from the adapter of {sft_run} (r 4), which "
                                               "this stage continues; remove lora_r")


def test_a_stage_loads_from_another_directory_and_after_its_outputs_move(write_recipe, sft_run, tmp_path, monkeypatch,
                                                                          capsys):
    """A stage's recipe names its start as the user typed it (`outputs/sft`, relative to where training ran): `eval`
    from another directory, or after the whole outputs/ folder moved, finds the start by the chain's path relative to
    the stage's folder, and scores base, start and tuned as it did."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(sft_run, work / "outputs" / "sft")
    monkeypatch.chdir(work)
    recipe = write_recipe("stage.yaml", model_name_or_path="outputs/sft", output_dir="outputs/stage", **KEYS)
    assert main([str(recipe)]) == 0
    trained = json.loads((work / "outputs" / "stage" / "eval_results.json").read_text())["evaluations"][0]["models"]
    assert list(trained) == ["base", "start", "tuned"]
    shutil.move(work / "outputs", tmp_path / "moved")
    monkeypatch.chdir(tmp_path)  # outputs/sft named from here is nothing
    capsys.readouterr()
    assert main(["eval", "moved/stage"]) == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "moved" / "stage" / "eval_results.json").read_text())["evaluations"][0]["models"]
    assert again == trained
    assert main(["export", "moved/stage", "stage.gguf", "--check", "0"]) == 0
    shutil.rmtree(tmp_path / "moved" / "sft")  # the start gone: one line naming where it was looked for
    capsys.readouterr()
    assert main(["eval", "moved/stage"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"medsft: error: moved/stage continues the run outputs/sft, which is neither at moved/stage/../sft nor at "
        f"{work / 'outputs' / 'sft'}, where it was trained; put the two runs' folders back side by side")


@pytest.mark.parametrize("trainer", ["dpo", "kto"])
def test_a_qlora_preference_stage_hands_trl_its_quantized_model_without_quantizing_it_again(write_recipe, sft_run,
                                                                                             trainer):
    """A stage from a LoRA run is loaded by medsft (its base quantized as the recipe says, the adapter on it); TRL
    refuses `quantization_config` beside a built model, so none is passed. (On the CPU the base cannot be quantized:
    the recipe says load_in_4bit after parsing, and the built model stands for what the GPU would load.)"""
    from medsft.models import loading, stages
    from medsft.recipe.parser import parse_recipe
    from medsft.training import catalog, prepare

    recipe = parse_recipe([str(write_recipe(f"{trainer}.yaml", trainer=trainer, model_name_or_path=str(sft_run), **KEYS))])
    prepared = prepare.prepare(recipe)
    prepared.model = stages.adapter_on(loading.load_model(recipe, prepared.start.base), recipe, prepared.start)
    recipe.model.load_in_4bit, recipe.model.bnb_4bit_quant_type = True, "nf4"
    trainer_unit = catalog.get(trainer)
    built = trainer_unit.build(recipe, prepared, recipe.training, [])
    assert built.model is prepared.model
