"""Under ZeRO-3 and FSDP2 every process makes the same module calls in evaluation, whatever its own rows score: two
CPU processes whose dev and test batches keep far more positions on one rank than on the other complete, and give
the numbers one process gives. A process that stops answering ends the run within ddp_timeout, in one line."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from conftest import ROOT, launch, launch_command, launch_env, rank_pid, run_cli, write_jsonl

slow = pytest.mark.slow
WORDS = ("the patient reports chest pain and fever with cough shortness of breath normal examination blood pressure "
         "history of diabetes").split()


def words(n: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


SHORT = ["yes", "no", "maybe", "unsure"]
LONG = [words(30, k) for k in range(4)]  # choices scored over their ~40 tokens each


def exam_item(i: int, long: bool) -> dict:
    labels = LONG if long else SHORT
    return {"question": f"Question {i}: {words(6, i)}?", "answer_idx": labels[i % 4],
            "options": {label: words(3, i + k) for k, label in enumerate(labels)}}


@pytest.fixture(scope="module")
def uneven(tmp_path_factory, tiny_model):
    """A recipe whose dev and test batches (4 rows each, sorted by length, shared out whole) hold 4 short notes on
    rank 0 and 4 long ones on rank 1, and an exam item of one-word choices on rank 0 and one of 30-word choices
    (each scored over its tokens) on rank 1: at the same step one rank projects far more positions than the other."""
    folder = tmp_path_factory.mktemp("uneven")
    notes = {split: [{"text": words(3 if i % 2 else 100, i)} for i in range(n)] for split, n in
             (("train", 8), ("validation", 8), ("test", 8))}
    exams = {split: [exam_item(i, i % 2 == 1) for i in range(n)] for split, n in (("train", 4), ("validation", 2), ("test", 2))}
    files = {name: {split: str(write_jsonl(folder / f"{name}-{split}.jsonl", rows)) for split, rows in data.items()}
             for name, data in (("notes", notes), ("exam", exams))}
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model), "use_peft": True, "lora_r": 4, "lora_alpha": 8,
        "lora_target_modules": "all-linear", "max_length": 384,  # every exam item fits whole
        "dataset_mixture": [
            {"name": "notes", "task": "text", "dataset_text_field": "text", "data_files": files["notes"]},
            {"name": "exam", "task": "multiple_choice", "choice_labels": SHORT + LONG, "data_files": files["exam"]},
        ],
        "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 5e-3, "logging_steps": 1,
        "eval_strategy": "steps", "eval_steps": 2, "eval_on_start": True, "per_device_eval_batch_size": 4,
        "save_strategy": "no", "report_to": "none", "seed": 0, "bf16": False, "sample_count": 1, "sample_max_new_tokens": 4,
        "ddp_timeout": 120,  # a hang fails the test in minutes, not the default's ten
    }))
    return recipe


def test_every_rank_calls_the_lm_head_as_often_at_each_step_whatever_its_rows(tiny_model, monkeypatch):
    """Scoring as rank 0 and as rank 1 of two (accelerate's state faked, the gathering stopped): rank 1's batch keeps
    far more positions, yet both call the head as often at every step (the extra calls project nothing), and each
    call projects at most ROWS rows."""
    import accelerate
    import accelerate.utils
    from transformers import AutoModelForCausalLM

    from medsft import tasks
    from medsft.evaluation import logprobs, scoring
    from medsft.models.tokenizer import load_tokenizer
    from medsft.recipe.keys import DataSpec

    class Gathered(Exception):
        pass

    def gather(objects):
        raise Gathered  # the loop is over: what is counted is every call this rank made

    tokenizer = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    task = tasks.get(DataSpec(task="text"))
    rows = [{"id": str(i), "text": words(3 if i % 2 else 100, i)} for i in range(8)]
    steps: list[list[int]] = []
    model.register_forward_pre_hook(lambda module, args: steps.append([]))
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: steps[-1].append(args[0].shape[0]))
    monkeypatch.setattr(logprobs, "ROWS", 16)
    monkeypatch.setattr(accelerate.utils, "gather_object", gather)
    calls = {}
    for rank in (0, 1):
        monkeypatch.setattr(accelerate, "PartialState", lambda: type("State", (), {"num_processes": 2, "process_index": rank})())
        steps.clear()
        with pytest.raises(Gathered):
            scoring.item_logliks(model, tokenizer, task, rows, 384, batch_size=4)
        calls[rank] = [list(step) for step in steps]
    # each step: the call the forward pass makes (its hidden states recorded), then the head's chunks
    assert len(calls[0]) == len(calls[1]) == 1  # 8 rows, batches of 4: one each
    assert [len(step) for step in calls[0]] == [len(step) for step in calls[1]]
    projected = {rank: sum(sum(step[1:]) for step in calls[rank]) for rank in calls}
    assert projected[1] - projected[0] > 64 and all(n <= 16 for step in calls[0] + calls[1] for n in step[1:])


def test_the_uneven_batches_put_more_than_64_positions_between_the_ranks(uneven):
    """The premise of the tests below, as scoring batches the rows: the rank holding the long rows projects more than
    64 more positions (one more head call) than the other at the same step."""
    from medsft.data import datasets as data
    from medsft.data import encoding
    from medsft.data.prompts import choice_spans
    from medsft.models.tokenizer import load_tokenizer
    from medsft.recipe import mixture
    from medsft.recipe.parser import parse_recipe

    recipe = parse_recipe([str(uneven)])
    tokenizer = load_tokenizer(recipe.model.model_name_or_path)
    encoder = encoding.Encoder(tokenizer, recipe.training.max_length)
    for dataset in data.load(mixture.specs(recipe.script, recipe.training)):
        rows = dataset.parts["test"]
        if dataset.task.choices:  # each choice its own sequence, scored over its tokens
            kept = sorted(s.stop - max(s.start, 1) for row in rows for s in choice_spans(encoder, dataset.task, row))
        else:  # every trained token after the first
            kept = sorted(sum(label != encoding.IGNORE for label in piece["labels"][1:])
                          for row in rows for piece in encoder(dataset.task.example(row))[0])
        assert len(kept) == 8 and sum(kept[4:]) - sum(kept[:4]) > 64, (dataset.spec.name, kept)


@pytest.fixture(scope="module")
def one_process(uneven, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    proc = run_cli(uneven, "--output_dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def dev_metrics(output_dir) -> dict[int, dict]:
    """medsft's task metrics logged at each evaluation during training, by step."""
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: {k: v for k, v in h.items() if re.fullmatch(r"eval_(notes|exam)_\w+", k)}
            for h in history if "eval_notes_perplexity" in h}


@slow
@pytest.mark.parametrize("config", ["zero3", "fsdp2"])
def test_uneven_evaluation_completes_and_equals_one_process(uneven, one_process, tmp_path, config):
    out = tmp_path / "run"
    proc = launch(config, uneven, "--output_dir", out, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded, single = dev_metrics(out), dev_metrics(one_process)
    assert sorted(sharded) == [0, 2] and set(sharded[2]) == {"eval_notes_perplexity", "eval_exam_accuracy", "eval_exam_macro_f1"}
    assert sharded[0] == single[0]  # before any step both score the same weights: the same numbers, to the bit
    trained = json.loads((out / "eval_results.json").read_text())
    # 8 notes and 8 choice sequences (2 items x 4), for base and tuned: half each
    assert trained["run"]["scored_per_process"] == [16, 16]
    proc = run_cli("eval", out)  # the saved weights, one process
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((out / "eval_results.json").read_text())
    assert again["run"]["scored_per_process"] == [32]
    assert again["evaluations"] == trained["evaluations"]  # every metric, interval, test and sample


@slow
def test_grpo_under_zero3_with_replies_of_different_lengths_completes_and_evaluates_as_one_process(tmp_path, tiny_model):
    from medsft.models.tokenizer import load_tokenizer

    eos = load_tokenizer(str(tiny_model)).eos_token_id
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 80,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
        "trainer": "grpo", "num_generations": 4, "max_completion_length": 12, "per_device_train_batch_size": 4,
        "max_steps": 2, "learning_rate": 5e-3, "save_strategy": "no", "report_to": "none", "seed": 0, "bf16": False,
        "max_test_samples": 8, "sample_count": 0, "answer_max_new_tokens": 8, "ddp_timeout": 120,
        # the untrained model ends a reply at random (its end of text made likely): each rank's replies end apart
        "generation_kwargs": {"sequence_bias": [[[eos], 5.0]]},
    }))
    out = tmp_path / "run"
    proc = launch("zero3", recipe, "--output_dir", out, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "reward" in h]
    assert any(h["completions/min_length"] < h["completions/max_length"] for h in logged), logged
    trained = json.loads((out / "eval_results.json").read_text())
    proc = run_cli("eval", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "eval_results.json").read_text())["evaluations"] == trained["evaluations"]


@slow
def test_generated_answers_under_zero3_with_replies_ending_apart_equal_one_process(tmp_path, tiny_model):
    """scoring: generate on 2 processes under ZeRO-3, the model's generation_config listing half its vocabulary as
    ends of a reply (as Qwen's lists several): replies stop at different steps on the two ranks, the rank done first
    keeps stepping with the other (the decoder), and the answers equal one process's."""
    import shutil

    from transformers import GenerationConfig

    model = tmp_path / "stops-early"
    shutil.copytree(tiny_model, model)
    config = GenerationConfig.from_pretrained(model)
    config.eos_token_id = list(range(4, 300, 2))
    config.save_pretrained(model)
    recipe = tmp_path / "generate.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(model), "task": "pubmedqa", "dataset_name": "synthetic", "synthetic_size": 80,
        "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": "all-linear", "max_length": 256,
        "max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 5e-3, "save_strategy": "no",
        "report_to": "none", "seed": 0, "bf16": False, "max_test_samples": 16, "per_device_eval_batch_size": 2,
        "scoring": "generate", "answer_max_new_tokens": 12, "sample_count": 2, "sample_max_new_tokens": 12,
        "ddp_timeout": 120,
    }))
    out = tmp_path / "run"
    proc = launch("zero3", recipe, "--output_dir", out, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    lengths = {len(p[f"{name}_reply"]) for p in predictions for name in ("base", "tuned")}
    assert min(lengths) < 10 and max(lengths) > 20, lengths  # replies ended at different steps
    trained = json.loads((out / "eval_results.json").read_text())
    assert trained["run"]["scored_per_process"] == [16, 16]  # 16 replies for base and tuned: half each
    proc = run_cli("eval", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "eval_results.json").read_text())["evaluations"] == trained["evaluations"]


@slow
def test_a_rank_that_stops_answering_ends_the_run_within_ddp_timeout(uneven, tmp_path):
    """Rank 1 frozen (SIGSTOP) mid-training under ZeRO-3: rank 0's next collective gets no answer, and within
    ddp_timeout it ends with one line naming itself and the step, exit 1, and run_state.json saying the run failed;
    the launcher then ends the frozen rank."""
    out = tmp_path / "run"
    cmd = launch_command("zero3", uneven, "--output_dir", out, "--max_steps", 100000, "--eval_steps", 100000,
                         "--eval_on_start", "false", "--eval_after_train", "false", "--ddp_timeout", 20)
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                env=launch_env(), start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (out / "recipe.yaml").is_file() and time.time() < deadline:  # written just before the first step
            time.sleep(0.5)
        time.sleep(3)
        frozen, rank0 = rank_pid(1, out), rank_pid(0, out)
        assert frozen is not None and rank0 is not None
        os.kill(frozen, signal.SIGSTOP)
        stopped = time.time()
        while _alive(rank0) and time.time() < stopped + 120:
            time.sleep(0.5)
        rank0_ended = time.time() - stopped
        _, stderr = launcher.communicate(timeout=180)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL) if launcher.poll() is None else None
    assert rank0_ended < 20 + 15  # the timeout, plus at most the step under way when rank 1 froze
    assert launcher.returncode != 0
    lines = [line for line in stderr.splitlines() if line.startswith("medsft: error:")]
    assert len(lines) == 1, stderr[-3000:]
    found = re.fullmatch(r"medsft: error: rank 0 at step (\d+) \(training\): no answer from another process within "
                         r"ddp_timeout \(20 s\): one is stuck or stopped; the run failed \(run_state\.json\)\. If a "
                         r"process was only slow, raise --ddp_timeout", lines[0])
    assert found, lines[0]
    state = json.loads((out / "run_state.json").read_text())
    assert state == {"state": "failed", "step": int(found.group(1)), "phase": "training", "trained": False, "reason": "timeout"}
    proc = run_cli("eval", out)  # a failed run is not taken for a trained one
    assert proc.returncode == 2 and f"holds a run that failed at step {found.group(1)}" in proc.stderr


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
