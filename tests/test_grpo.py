"""trainer: grpo: TRL's GRPOTrainer on a choice task, generating after the prompts SFT trains the answer after and
rewarded by the answer the reply states (the evaluation's reading); its keys, its refusals, its report."""

import json

import pytest
import torch
from safetensors.torch import load_file

from medsft.__main__ import main
from medsft.errors import UserError
from medsft.recipe.parser import parse_recipe

GRPO = {"trainer": "grpo", "num_generations": 4, "max_completion_length": 6, "per_device_train_batch_size": 4,
        "max_steps": 2, "max_test_samples": 8, "sample_count": 0, "answer_max_new_tokens": 6}


def one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_grpo_keys_parse_and_a_misspelt_one_is_refused_with_a_did_you_mean(write_recipe, capsys):
    recipe = parse_recipe([str(write_recipe(**GRPO, beta=0.04, reward_weights=[1.0, 0.5]))])
    assert type(recipe.training).__name__ == "MedsftGRPOConfig"
    assert (recipe.training.num_generations, recipe.training.beta, recipe.training.reward_weights) == (4, 0.04, [1.0, 0.5])
    assert recipe.script.scoring == "generate"  # after GRPO, the answers are what is scored
    line = one_line(capsys, [str(write_recipe(**GRPO, num_generatons=4))])
    assert line.startswith("medsft: error: unknown key 'num_generatons' in ") and line.endswith("; did you mean 'num_generations'?")
    line = one_line(capsys, [str(write_recipe(**GRPO)), "--packing", "true"])
    assert line == ("medsft: error: key 'packing' on the command line is for trainer: sft, and this recipe's trainer is "
                    "grpo; remove it (or set trainer: sft)")
    line = one_line(capsys, [str(write_recipe(num_generations=4))])
    assert "key 'num_generations' in" in line and "is for trainer: grpo" in line


def test_rewards_are_the_evaluations_reading_of_the_reply():
    from medsft import tasks
    from medsft.recipe.keys import DataSpec
    from medsft.training import grpo

    task = tasks.get(DataSpec(task="pubmedqa", chat=True))
    items = {"d/1": (task, {"id": "1", "final_decision": "no"})}
    rewards = grpo.builtin_rewards(items)
    replies = [[{"role": "assistant", "content": text}] for text in ("No.", "Yes", "No, it is absent", "unclear", "")]
    assert rewards["correctness"](replies, item=["d/1"] * 5) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert rewards["format"](replies, item=["d/1"] * 5) == [1.0, 1.0, 0.5, 0.0, 0.0]


def test_two_grpo_steps_with_lora_change_the_adapter_and_report_rewards(write_recipe, tmp_path, capsys):
    """A user's reward (its dotted path, with --trust_remote_code true) that differs between replies: the adapter moves
    from its zero start; the run logs the reward and reply length, and evaluation reads generated answers."""
    recipe = write_recipe(**GRPO, reward_funcs=["correctness", "rewards.reply_length"], reward_weights=[1.0, 0.01])
    assert main([str(recipe), "--trust_remote_code", "true"]) == 0
    out = tmp_path / "out"
    weights = load_file(out / "adapter_model.safetensors")
    assert any(torch.count_nonzero(w) > 0 for name, w in weights.items() if "lora_B" in name)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "reward" in h]
    assert len(logged) == 2 and all("rewards/reply_length/mean" in h and "completions/mean_length" in h for h in logged)
    results = json.loads((out / "eval_results.json").read_text())
    [evaluation] = results["evaluations"]
    assert evaluation["scoring"] == "generate"
    for name in ("base", "tuned"):
        assert {"accuracy", "accuracy_lenient", "unparseable"} <= set(evaluation["models"][name])
    assert "tuned_vs_base" in evaluation["tests"]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8 and all("tuned_reply" in p and "base_lenient" in p for p in predictions)


def test_a_users_reward_needs_trust_remote_code_on_the_command_line(write_recipe, capsys):
    recipe = str(write_recipe(**GRPO, reward_funcs=["rewards.reply_length"]))
    assert one_line(capsys, [recipe]) == ("medsft: error: reward_funcs: rewards.reply_length is your own code; medsft "
                                          "imports it only with --trust_remote_code true on the command line")
    assert one_line(capsys, [str(write_recipe(**GRPO, reward_funcs=["correct"]))]) == (
        "medsft: error: reward_funcs: 'correct' is not a built-in reward (correctness, format) nor a dotted path module.function")
    assert one_line(capsys, [str(write_recipe(**GRPO, reward_weights=[1.0]))]).startswith(
        "medsft: error: reward_weights has 1 weights for 2 reward_funcs")


def test_grpo_refuses_a_task_without_an_answer_key(write_recipe, capsys):
    line = one_line(capsys, [str(write_recipe(**GRPO, task="report"))])
    assert line.startswith("medsft: error: trainer: grpo rewards answers checked against the key: dataset report is task report")


def test_the_compact_lm_head_on_the_cpu_gives_the_full_paths_log_probs_and_gradients(tiny_model):
    """GRPO (and DPO, KTO) score only the completion's positions on the CPU too (compact_head.compact_head_on_cpu):
    the same log-probabilities and the same gradients as TRL's path through every position."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from medsft.training import compact_head

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    ids = torch.randint(3, model.config.vocab_size, (3, 24))
    labels = ids.clone()
    labels[:, :-5] = -100  # the completion: the last 5 tokens

    from trl.trainer import utils

    rows, apply = [], utils._ChunkedLogProbFunction.apply
    utils._ChunkedLogProbFunction.apply = lambda hidden, *rest: rows.append(len(hidden)) or apply(hidden, *rest)

    def run(compact: bool):
        model.zero_grad()
        if compact:
            with compact_head.compact_head_on_cpu():
                out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        else:
            out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() + out.entropy[:, -5:].sum()).backward()
        return out.log_probs[:, -5:].detach(), [p.grad.clone() for p in model.parameters()]

    try:
        full_logps, full_grads = run(False)
        compact_logps, compact_grads = run(True)
    finally:
        utils._ChunkedLogProbFunction.apply = apply
    assert rows == [3 * 23, 3 * 5]  # every position, then the completions' only
    torch.testing.assert_close(compact_logps, full_logps, atol=1e-5, rtol=1e-5)
    for a, b in zip(compact_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not utils._use_triton(torch.device("cpu"))  # restored: nothing else sees the change


def test_scoring_both_reports_likelihoods_and_answers_and_votes_among_sampled_replies(write_recipe, tmp_path, capsys):
    recipe = write_recipe(max_steps=1, max_test_samples=6, sample_count=0, scoring="both", answer_max_new_tokens=4,
                          num_samples=3, answer_temperature=0.8)
    assert main([str(recipe)]) == 0
    out = tmp_path / "out"
    results = json.loads((out / "eval_results.json").read_text())
    likelihood, generated = results["evaluations"]
    assert (likelihood["scoring"], generated["scoring"]) == ("likelihood", "generate")
    assert "accuracy_lenient" not in likelihood["models"]["tuned"]
    for name in ("base", "tuned"):
        m = generated["models"][name]
        assert {"accuracy", "accuracy_lenient", "unparseable", "accuracy_maj@3"} <= set(m) and "accuracy_maj@3" in m["ci"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["scoring"] for r in rows] == ["likelihood"] * 6 + ["generate"] * 6
    assert all(len(r["tuned_replies"]) == 3 and r["tuned_reply"] == r["tuned_replies"][0] for r in rows[6:])
    assert "generated answers" in capsys.readouterr().out
    line = one_line(capsys, [str(write_recipe(scoring="generate", num_samples=3))])
    assert line.startswith("medsft: error: num_samples 3 votes among sampled replies: it needs scoring: generate (or both) "
                           "and answer_temperature above 0")
    line = one_line(capsys, [str(write_recipe(scoring="generate", calibrate=True))])
    assert line.startswith("medsft: error: calibrate offsets the choices' likelihoods")


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "plain"])
def test_grpo_generates_after_the_tokens_sft_trains_the_answer_after(tiny_chat_model, write_recipe, chat, capsys):
    """The same prompts as SFT: each GRPO prompt's ids are the SFT row's ids before its first trained token."""
    from medsft.data import encoding
    from medsft.training import grpo, prepare

    keys = dict(model_name_or_path=str(tiny_chat_model), chat=chat)
    sft = prepare.prepare(parse_recipe([str(write_recipe("sft.yaml", **keys))]))
    rl = prepare.prepare(parse_recipe([str(write_recipe("grpo.yaml", **keys, **GRPO))]))
    assert len(rl.train_dataset) == len(sft.train_dataset)
    trained_after = []
    for row in sft.train_dataset:
        first = next(i for i, label in enumerate(row["labels"]) if label != encoding.IGNORE)
        trained_after.append(row["input_ids"][:first])
    assert grpo.prompt_ids_of(rl, rl.train_dataset) == trained_after
    assert main(["preview", str(write_recipe("grpo.yaml", **keys, **GRPO)), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "prompt 1:" in out and "nothing trained, nothing written" in out
