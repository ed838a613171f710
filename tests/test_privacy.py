"""What a model gives back, and training with a guarantee. The audit finds what is planted: records repeated 16 times
in training are extractable, held-out ones are not, membership inference separates trained from held-out rows on
an overfit run, canaries inserted 16 times are exposed; nothing of the kind in a model that trained on nothing. Its
extraction is transformers' greedy generate. DP-SGD: per-example gradients equal a per-row loop, a private LoRA step
moves the adapter (Opacus issue 820), the epsilon recorded is Opacus's accountant's, and a run killed and resumed
ends at the epsilon of an uninterrupted one. Bad settings are one line."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_cli, write_jsonl
from medsft.__main__ import main

pytestmark = pytest.mark.slow
WORDS = "fever cough pain rash nausea edema dyspnea fatigue wheeze syncope".split()


def records(rng, n, tag):
    """Notes each carrying a record the model can only reproduce by memorizing it."""
    return [{"text": f"Note {tag}{i}: record {''.join(rng.choice('0123456789') for _ in range(8))} "
                     f"{' '.join(rng.choice(WORDS) for _ in range(6))} follow up {rng.randint(2, 9)} weeks."}
            for i in range(n)]


@pytest.fixture(scope="module")
def memorized(tmp_path_factory, tiny_model):
    """A full fine-tune that saw 12 records 16 times each (and canaries 1 and 16 times), held-out notes beside them,
    trained until it overfits; audited by the command."""
    import yaml

    folder = tmp_path_factory.mktemp("memorized")
    rng = random.Random(0)
    planted = records(rng, 12, "p")
    files = {"train": str(write_jsonl(folder / "train.jsonl", planted * 16)),
             "validation": str(write_jsonl(folder / "dev.jsonl", records(rng, 12, "d"))),
             "test": str(write_jsonl(folder / "test.jsonl", records(rng, 12, "t")))}
    recipe = folder / "memorize.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model), "task": "text", "data_files": files, "use_peft": False,
        "max_length": 64, "num_train_epochs": 12, "per_device_train_batch_size": 16, "learning_rate": 3e-3,
        "lr_scheduler_type": "constant", "logging_steps": 10, "eval_strategy": "no", "save_strategy": "no",
        "report_to": "none", "seed": 0, "sample_count": 0, "output_dir": str(folder / "run"),
        "canaries": {"count": 2, "repeats": [1, 16], "format": "Record of the canary: {secret:6}."}}))
    assert main([str(recipe)]) == 0
    run = folder / "run"
    assert main(["audit", str(run), "--prefix", "8", "--suffix", "8", "--candidates", "500"]) == 0
    return run, planted


def test_the_audit_finds_the_planted_records_and_the_trained_rows(memorized):
    run, planted = memorized
    found = json.loads((run / "audit.json").read_text())
    e = found["extraction"]
    assert e["share"] >= 0.8 and e["heldout_share"] <= 0.05, e
    recorded = json.loads((run / "split_ids.json").read_text())
    ids = {i for name, parts in recorded.items() if name != "canaries" for i in parts["train"]}
    assert e["extractable_ids"] and set(e["extractable_ids"]) <= ids  # as split_ids.json records them
    assert found["membership"]["loss_auc"]["value"] > 0.8 and found["membership"]["loss_auc"]["ci"][0] > 0.5
    by = {c["repeats"]: c["exposure"] for c in found["canaries"]}
    assert by[16] >= 10 and by[16] > by[1], found["canaries"]
    assert found["verdict"].startswith("the model gives back its training data")
    canaries = json.loads((run / "canaries.json").read_text())["canaries"]
    assert [c["repeats"] for c in canaries] == [1, 1, 16, 16]


def test_a_model_that_trained_on_nothing_is_at_chance(memorized, tiny_model):
    from transformers import AutoModelForCausalLM

    from medsft.evaluation.audit_run import audit
    from medsft.models.tokenizer import load_tokenizer
    from medsft.runs import run_folder

    run, _ = memorized
    recipe, datasets, planted, digits = run_folder.audited(run)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    found = audit(recipe, model, load_tokenizer(str(tiny_model)), datasets, planted, digits, prefix=8, suffix=8,
                  candidates=200)
    for kind, v in found["membership"].items():
        assert v["ci"][0] <= 0.5 <= v["ci"][1], (kind, v)
    assert found["extraction"]["share"] == 0.0
    assert found["verdict"].startswith("no memorization measured")


def test_extraction_is_transformers_greedy_generate(memorized, tiny_model):
    from transformers import AutoModelForCausalLM

    from medsft.evaluation.memorization import extractable
    from medsft.models.tokenizer import load_tokenizer

    run, planted = memorized
    tokenizer = load_tokenizer(str(run))
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    rng = random.Random(1)
    sequences = [tokenizer(r["text"])["input_ids"] for r in planted + records(rng, 12, "x")]
    ours = extractable(model, tokenizer, sequences, 8, 8)
    for sequence, flag in zip(sequences, ours):
        with torch.no_grad():
            out = model.generate(torch.tensor([sequence[:8]]), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)[0, 8:].tolist()
        assert flag == (out[:8] == sequence[8:16]), (sequence, out)
    assert sum(ours[:12]) >= 9 and not any(ours[12:])


def private_recipe(write_recipe, **keys):
    return write_recipe("private.yaml", **{"synthetic_size": 120, "per_device_train_batch_size": 4,
                                           "gradient_accumulation_steps": 2, "max_steps": 6, "eval_after_train": False,
                                           "lora_dropout": 0.0, "dp": {"epsilon": 8.0}, **keys})


def test_per_example_gradients_equal_a_per_row_loop(write_recipe):
    from medsft.recipe.parser import parse_recipe
    from medsft.training import fit, prepare

    recipe = parse_recipe([str(private_recipe(write_recipe))])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    trainer.create_optimizer()
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(5)]))
    model = trainer.model.train()
    trainer.training_step(model, batch)  # the chunks of 4 and 1 rows, their per-example gradients kept
    params = [p for p in model.parameters() if p.requires_grad]
    per_example = [torch.cat(p.grad_sample) if isinstance(p.grad_sample, list) else p.grad_sample for p in params]
    for row in range(5):
        model.zero_grad()
        for p in params:
            p.grad_sample = None
        single = {k: v[row : row + 1] for k, v in batch.items()}
        trainer.row_losses(model, single).sum().backward()
        for p, g in zip(params, per_example):
            torch.testing.assert_close(g[row], p.grad, atol=1e-6, rtol=1e-4)


def test_a_private_lora_run_moves_its_adapter_and_records_the_accountants_epsilon(write_recipe, tmp_path, capsys):
    from opacus.accountants import create_accountant
    from safetensors.torch import load_file

    assert main([str(private_recipe(write_recipe))]) == 0
    assert "privacy" in capsys.readouterr().out
    out = tmp_path / "out"
    weights = load_file(out / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and w.abs().max() > 0 for k, w in weights.items())  # LoRA B starts at zero
    privacy = json.loads((out / "run_state.json").read_text())["privacy"]
    assert privacy["steps"] == 6 and privacy["accountant"] == "prv" and privacy["max_grad_norm"] == 1.0
    accountant = create_accountant("prv")
    accountant.history = [(privacy["noise_multiplier"], privacy["sample_rate"], privacy["steps"])]
    assert privacy["epsilon"] == pytest.approx(accountant.get_epsilon(privacy["delta"]), rel=1e-9)
    rows = len(json.loads((out / "split_ids.json").read_text())["pubmedqa"]["train"])
    assert privacy["sample_rate"] == pytest.approx(8 / rows) and privacy["delta"] == pytest.approx(1 / (2 * rows))
    assert privacy["epsilon"] <= 8.0 + 1e-6  # the planned steps spend the budget, no more


def test_a_killed_private_run_resumes_to_the_same_epsilon(write_recipe, tmp_path):
    keys = dict(max_steps=20, save_steps=5, save_strategy="steps")
    reference = private_recipe(write_recipe, output_dir=str(tmp_path / "reference"), **keys)
    assert run_cli(reference).returncode == 0
    recipe = private_recipe(write_recipe, output_dir=str(tmp_path / "killed"), **keys)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medsft", str(recipe)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from medsft.runs.run_state import problem

    deadline = time.time() + 300
    while not (out / "checkpoint-5").is_dir() or problem(out / "checkpoint-5"):
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cli(recipe, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ended, expected = (json.loads((d / "run_state.json").read_text())["privacy"] for d in (out, tmp_path / "reference"))
    assert ended["steps"] == expected["steps"] == 20 and ended["epsilon"] == pytest.approx(expected["epsilon"], rel=1e-12)


@pytest.mark.parametrize("keys, message", [
    ({"trainer": "dpo"}, "dp trains with trainer: sft only; trainer: dpo's loss ties several rows"),
    ({"dp": {"epsilon": 0}}, "dp: epsilon must be a number above 0 (the privacy budget; 8 is common), got 0"),
    ({"dp": {"epsilon": 8, "delta": 0.5}}, "dp: delta 0.5 is not below 1 / training rows"),
    ({"packing": True}, "dp cannot be used with packing"),
    ({"deepspeed": "accelerate_configs/deepspeed/zero3.json"}, "dp cannot be used with deepspeed"),
    ({"dp": {"epsilon": 8, "noise": 1}}, "dp: unknown key 'noise'; it takes epsilon, delta, max_grad_norm, accountant"),
    ({"dp": None, "trainer": "dpo", "canaries": {"count": 1}}, "canaries are trained as text rows, which trainer: dpo "
                                                               "does not train"),
])
def test_what_cannot_be_private_is_one_line(write_recipe, tmp_path, capsys, keys, message):
    recipe = private_recipe(write_recipe, **keys)
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medsft: error: " + message), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["llama3", "qwen2", "gemma2", "mistral", "phi3", "gpt2"])
def test_the_audit_runs_on_every_family_chat_and_plain(zoo_models, write_recipe, name):
    """Each zoo family's tiny model, its rows rendered plain and through its chat template (GPT-2 has none), a
    canary planted: the audit measures every part on the tokens training would train."""
    from medsft.evaluation.audit_run import audit
    from medsft.models.tokenizer import load_tokenizer
    from medsft.recipe.parser import parse_recipe
    from medsft.training import prepare
    from transformers import AutoModelForCausalLM

    path = zoo_models(name)
    for chat in ([False, True] if name != "gpt2" else [False]):
        recipe = parse_recipe([str(write_recipe(f"{name}.yaml", model_name_or_path=str(path), chat=chat, synthetic_size=40,
                                                canaries={"count": 1, "repeats": [2]}))])
        prepared = prepare.prepare(recipe)
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        found = audit(recipe, model, load_tokenizer(str(path)), prepared.datasets, prepared.canaries, 7, rows=6,
                      prefix=8, suffix=4, candidates=30)
        assert found["rows"] == {"trained": 6, "heldout": 6} and found["extraction"]["compared"] == 6, (name, chat)
        assert all(v["value"] is not None for v in found["membership"].values())
        assert [c["repeats"] for c in found["canaries"]] == [2] and found["canaries"][0]["candidates"] == 30
