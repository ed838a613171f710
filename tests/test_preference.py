"""Preference data from files, no Python (task: preference): TRL's paired, implicit-prompt and unpaired formats train
through the real command (dpo, orpo, kto), pairs are built from a choice task (all or one drawn), and every bad row
is one line naming the file, the row and the field, exit 2, nothing written."""

import json

import pytest

from conftest import write_jsonl
from medsft.__main__ import main
from medsft.recipe.parser import parse_recipe
from medsft.training import prepare

STEPS = {"max_steps": 2, "per_device_train_batch_size": 2, "max_test_samples": 4, "sample_count": 0}
FINDINGS = ["fever", "cough", "rash", "tachycardia", "hypoxia", "oedema", "jaundice", "pallor"]


def plain_rows(n=12):
    return [{"prompt": f"Note: {FINDINGS[i % 8]} on day {i}.\nQuestion: is it abnormal?\nAnswer:",
             "chosen": " yes", "rejected": " no"} for i in range(n)]


def chats(n=12):
    user = [{"role": "user", "content": f"Is {FINDINGS[i % 8]} on day {i} abnormal?"} for i in range(n)]
    return user


def one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("form,trainer", [("plain", "dpo"), ("conversational", "dpo"), ("implicit", "orpo"),
                                          ("unpaired", "kto"), ("template", "dpo")])
def test_each_preference_format_trains_from_a_file(write_recipe, tmp_path, tiny_chat_model, form, trainer):
    user = chats()
    rows = {
        "plain": plain_rows(),
        "conversational": [{"prompt": [u], "chosen": [{"role": "assistant", "content": "Yes."}],
                            "rejected": [{"role": "assistant", "content": "No."}]} for u in user],
        "implicit": [{"chosen": [u, {"role": "assistant", "content": "Yes."}],
                      "rejected": [u, {"role": "assistant", "content": "No."}]} for u in user],
        "unpaired": [{"prompt": r["prompt"], "completion": r["chosen" if i % 2 else "rejected"], "label": bool(i % 2)}
                     for i, r in enumerate(plain_rows())],
        "template": [{"finding": FINDINGS[i % 8], "day": i, "good": " yes", "bad": " no"} for i in range(12)],
    }[form]
    data = write_jsonl(tmp_path / f"{form}.jsonl", rows)
    keys = dict(task="preference", dataset_name=str(data), trainer=trainer, model_name_or_path=str(tiny_chat_model), **STEPS)
    if form == "template":  # a user's columns: renamed, and the prompt written over them
        keys.update(columns={"finding": "finding", "day": "day", "good": "chosen", "bad": "rejected"},
                    prompt_template="Note: {finding} on day {day}.\nQuestion: is it abnormal?\nAnswer:")
    if trainer == "kto":
        keys["per_device_train_batch_size"] = 4  # its KL term needs a batch above 1
    recipe = write_recipe(**keys)
    prepared = prepare.prepare(parse_recipe([str(recipe)]))
    first = prepared.train_dataset[0]
    assert {"prompt_ids"} <= set(first) and ({"chosen_ids", "rejected_ids"} <= set(first) or "completion_ids" in first)
    assert main([str(recipe)]) == 0
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "adapter_model.safetensors").is_file()
    [evaluation] = json.loads((out / "eval_results.json").read_text())["evaluations"]
    if form != "unpaired":  # held-out pairs scored: each model's preference, and the tuned one's implicit reward
        models, tests = evaluation["models"], evaluation["tests"]
        for m in models.values():
            assert 0 <= m["preference_accuracy"] <= 1 and m["pairs"] == evaluation["n"]
            assert m["ci"]["preference_accuracy"][0] <= m["preference_accuracy"] <= m["ci"]["preference_accuracy"][1]
        rewards = tests["tuned_vs_base_rewards"]
        assert 0 <= rewards["reward_accuracy"] <= 1 and rewards["reward_margin_ci"][0] <= rewards["reward_margin"]


@pytest.mark.parametrize("row,field,message", [
    ({"prompt": "Q?", "rejected": " no"}, "chosen", "has no field 'chosen'"),
    ({"prompt": "Q?", "chosen": "  ", "rejected": " no"}, "chosen", "chosen is empty"),
    ({"prompt": "Q?", "chosen": " yes", "rejected": " yes"}, "rejected", "chosen and rejected are the same answer"),
    ({"prompt": "Q?", "chosen": 3, "rejected": " no"}, "chosen", "chosen must be text or a list of messages, got int"),
    ({"prompt": "", "chosen": " yes", "rejected": " no"}, "prompt", "prompt is empty"),
    ({"chosen": [{"role": "user", "content": "A?"}, {"role": "assistant", "content": "Yes."}],
      "rejected": [{"role": "user", "content": "B?"}, {"role": "assistant", "content": "No."}]}, "prompt",
     "chosen and rejected do not share their first turns (the implicit prompt): they differ at message 1"),
    ({"prompt": "Q?", "completion": " yes", "label": "yes"}, "label", "label must be true or false"),
    ({"prompt": "Q?", "completion": " yes"}, "label", "has no field 'label'"),
])
def test_a_bad_preference_row_is_one_line_naming_file_row_and_field(write_recipe, tmp_path, capsys, row, field, message):
    rows = plain_rows(5)
    rows.insert(3, row)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    recipe = write_recipe(task="preference", dataset_name=str(data), trainer="dpo", **STEPS)
    line = one_line(capsys, [str(recipe)])
    assert line.startswith(f"medsft: error: dataset {data} row 4") and message in line and field in line, line
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize("pairs,expected", [("all", 2), ("sampled", 1)])
def test_pairs_built_from_a_choice_task(write_recipe, pairs, expected):
    """PubMedQA (three options): the key's answer against both others, or against one drawn per item; the same draw
    on every run."""
    recipe = write_recipe(trainer="dpo", pairs=pairs, **STEPS)
    first = prepare.prepare(parse_recipe([str(recipe)]))
    stats = first.stats["train"]
    assert stats.pairs == expected * stats.rows
    again = prepare.prepare(parse_recipe([str(recipe)]))
    assert again.train_dataset.to_dict() == first.train_dataset.to_dict()


def test_preference_keys_belong_to_their_trainers(write_recipe, capsys):
    line = one_line(capsys, [str(write_recipe(trainer="dpo", beta=0.1, **STEPS)), "--num_generations", "4"])
    assert "key 'num_generations' on the command line is for trainer: grpo" in line
    line = one_line(capsys, [str(write_recipe(pairs="sampled", **STEPS))])
    assert line == ("medsft: error: pairs is read by trainer: dpo or kto or orpo, and this recipe's trainer is sft; "
                    "set trainer: dpo or remove it")
    line = one_line(capsys, [str(write_recipe(trainer="dpo", betta=0.1, **STEPS))])
    assert "unknown key 'betta'" in line and "did you mean 'beta'?" in line
    recipe = parse_recipe([str(write_recipe(trainer="dpo", loss_type=["ipo"], beta=0.2, **STEPS))])
    assert recipe.training.loss_type == ["ipo"] and recipe.training.beta == 0.2


def test_pair_metrics_and_the_implicit_reward_on_known_numbers():
    from medsft.evaluation import pairwise

    start = [[[-1.0, -2.0]], [[-3.0, -1.0]]]  # [log p(chosen), log p(rejected)]: prefers the first pair's chosen only
    tuned = [[[-0.5, -2.5]], [[-2.0, -1.5]]]
    found = pairwise.pair_metrics(start, 0)
    assert (found["pairs"], found["preference_accuracy"], found["preference_margin"]) == (2, 0.5, -0.5)
    rewards = pairwise.reward_test(start, tuned, 0)  # (0.5 + 0.5) and (1.0 + 0.5): both prefer the chosen answer
    assert (rewards["reward_accuracy"], rewards["reward_margin"]) == (1.0, 1.25)
    assert rewards["reward_margin_ci"][0] <= 1.25 <= rewards["reward_margin_ci"][1]


def kto_batches(trainer, epoch: int) -> list[dict]:
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)  # as the trainer's loop does at each epoch
    return list(loader)


def sequences(ids, *masks):
    """Each row's tokens where every mask is 1."""
    keep = masks[0].bool()
    for m in masks[1:]:
        keep &= m.bool()
    return [tuple(row[k].tolist()) for row, k in zip(ids, keep)]


def test_ktos_kl_partners_come_from_other_prompts_and_the_rows_are_shuffled_each_epoch(write_recipe, tmp_path):
    """Unpaired rows as they usually come, and as medsft builds them from a choice item: several completions of one
    prompt together (here three, each completion its own text, so that a KL completion names its row). TRL's
    rotation of the file order partners two of three rows with their own prompt. Each row's KL completion is another
    prompt's, and each epoch sees another order, the same under the seed."""
    from medsft.training import fit

    rows = [{"prompt": f"Note: {FINDINGS[i % 8]} on day {i}.\nQuestion: is it abnormal?\nAnswer:",
             "completion": f" {word} {i}", "label": word == "yes"} for i in range(24) for word in ("yes", "no", "unsure")]
    files = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows)),
             "validation": str(write_jsonl(tmp_path / "dev.jsonl", rows[:6])),
             "test": str(write_jsonl(tmp_path / "test.jsonl", rows[:6]))}  # the files' own splits: the order kept
    recipe = parse_recipe([str(write_recipe("kto.yaml", trainer="kto", task="preference", dataset_name=None, data_files=files,
                                            per_device_train_batch_size=8, max_steps=2))])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    epochs = [kto_batches(trainer, e) for e in (0, 1)]
    mismatched = total = 0
    for batch in epochs[0]:
        prompt = sequences(batch["input_ids"], batch["attention_mask"], 1 - batch["completion_mask"])
        answer = sequences(batch["input_ids"], batch["completion_mask"])
        kl_prompt = sequences(batch["KL_input_ids"], batch["KL_attention_mask"], 1 - batch["KL_completion_mask"])
        kl_answer = sequences(batch["KL_input_ids"], batch["KL_completion_mask"])
        assert kl_prompt == prompt  # each row's own prompt, another row's completion
        for i in range(len(prompt)):
            [j] = [j for j in range(len(answer)) if answer[j] == kl_answer[i]]  # completions are unique
            total += 1
            mismatched += prompt[j] != prompt[i]
    assert total >= 48 and mismatched == total, (mismatched, total)
    order = [[tuple(r) for r in b["input_ids"].tolist()] for b in epochs[0]]
    assert order != [[tuple(r) for r in b["input_ids"].tolist()] for b in epochs[1]]
    again = fit.build_trainer(recipe, prepare.prepare(recipe))
    assert [[tuple(r) for r in b["input_ids"].tolist()] for b in kto_batches(again, 0)] == order


def test_kto_refuses_precomputed_reference_scores_with_its_kl_term(write_recipe, capsys):
    recipe = write_recipe("kto.yaml", trainer="kto", per_device_train_batch_size=4, precompute_ref_log_probs=True,
                          use_peft=False)
    assert one_line(capsys, [str(recipe)]) == (
        "medsft: error: precompute_ref_log_probs cannot be used with trainer: kto's KL term: its mismatched partners "
        "are drawn in each batch as it is shuffled, not fixed in advance; remove precompute_ref_log_probs (or use "
        "loss_type: apo_zero_unpaired, which has no KL term)")


def test_partners_pair_every_row_with_another_prompt_where_the_batch_allows():
    from medsft.training.kto import partners

    assert partners([[1], [1], [2], [2]]) == [2, 3, 0, 1]  # rotation by two: each completion used once
    assert partners([[1], [1], [1], [2]]) == [3, 3, 3, 0]  # no rotation works: the nearest other prompt
    assert partners([[1], [1]]) == [1, 0]  # one prompt: nothing mismatched exists


def test_orpos_nll_term_trains_the_chosen_answers_tokens_only(write_recipe):
    """ORPO's SFT term is -log P(chosen | prompt), a mean over the answer's tokens as SFT's loss is; TRL's takes the
    prompt's tokens too."""
    import torch
    import torch.nn.functional as F

    from medsft.training import fit

    recipe = parse_recipe([str(write_recipe("orpo.yaml", trainer="orpo", per_device_train_batch_size=4))])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    model = trainer.model.eval()
    with torch.no_grad():
        nll = trainer.concatenated_forward(model, batch)[4]
        ids, labels = batch["chosen_input_ids"], batch["chosen_labels"]
        logits = model(ids, attention_mask=batch["chosen_attention_mask"]).logits[:, :-1]
        answer = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        whole = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].masked_fill(batch["chosen_attention_mask"][:, 1:] == 0, -100).flatten(),
                                ignore_index=-100)
    assert (labels[:, 1:] != -100).sum() < (batch["chosen_attention_mask"][:, 1:] == 1).sum() / 4  # answers are short
    torch.testing.assert_close(nll, answer, atol=1e-4, rtol=1e-4)
    assert abs(nll.item() - whole.item()) > 1e-2
