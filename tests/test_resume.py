"""Checkpoints and resume: a run killed with SIGKILL and resumed ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import ROOT, run_cli
from medsft.runs import run_state

pytestmark = pytest.mark.slow
KEYS = dict(max_steps=40, save_steps=10, save_strategy="steps", save_total_limit=3, bf16=False, eval_after_train=False,
            learning_rate=3e-3, synthetic_size=200, per_device_train_batch_size=2)


# Each kind of run: LoRA on a pretrained model, a full fine-tune, and a model and tokenizer from scratch with packing.
KINDS = {
    "lora": {},
    "full": {"use_peft": False, "learning_rate": 1e-3},
    "scratch-packed": {"model_name_or_path": "scratch-gpt2", "use_peft": False, "task": "report", "packing": True,
                       "max_length": 64, "learning_rate": 1e-3,
                       "scratch_config": {"vocab_size": 300, "n_layer": 2, "n_head": 2, "n_embd": 32}},
}


def final(out):
    import json

    state = json.loads((out / "trainer_state.json").read_text())
    weights = out / "adapter_model.safetensors"
    return [h["loss"] for h in state["log_history"] if "loss" in h][-1], load_file(weights if weights.is_file() else out / "model.safetensors")


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_between_checkpoints_then_resume_equals_an_uninterrupted_run(write_recipe, tmp_path, kind):
    keys = {**KEYS, **KINDS[kind]}
    reference = write_recipe("reference.yaml", output_dir=str(tmp_path / "reference"), **keys)
    assert run_cli(reference).returncode == 0
    recipe = write_recipe("killed.yaml", output_dir=str(tmp_path / "killed"), **keys)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medsft", str(recipe)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    from medsft.runs.run_state import problem

    while not (out / "checkpoint-10").is_dir() or problem(out / "checkpoint-10"):  # checkpoint 10 complete, 20 not yet
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "trainer_state.json").exists(), "the kill came after the run finished"
    resumed = run_cli(recipe, "--resume_from_checkpoint", "true")
    assert resumed.returncode == 0, resumed.stderr
    loss, weights = final(out)
    ref_loss, ref_weights = final(tmp_path / "reference")
    assert loss == pytest.approx(ref_loss, abs=1e-6)
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert (weights[name] - ref_weights[name]).abs().max() < 1e-6, name


def test_a_half_written_checkpoint_is_skipped_with_a_warning(write_recipe, tmp_path):
    recipe = write_recipe(**{**KEYS, "max_steps": 20})
    assert run_cli(recipe).returncode == 0
    out = tmp_path / "out"
    broken = out / "checkpoint-30"  # newer than any real one, killed while writing: weights but no trainer state
    broken.mkdir()
    (broken / "adapter_model.safetensors").write_bytes((out / "checkpoint-20" / "adapter_model.safetensors").read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping .*checkpoint-30: no trainer_state.json"):
        assert run_state.latest(str(out)) == str(out / "checkpoint-20")
    proc = run_cli(recipe, "--resume_from_checkpoint", "true", "--max_steps", "24")
    assert proc.returncode == 0, proc.stderr
    assert "skipping" in proc.stderr and "checkpoint-30" in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_a_checkpoint_and_stop(write_recipe, tmp_path, sig):

    recipe = write_recipe(**{**KEYS, "max_steps": 100_000, "save_steps": 200_000})  # still training when signalled
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "medsft", str(recipe)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "recipe.yaml").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    time.sleep(3)  # into the training loop
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, stderr
    assert f"stopped by {signal.Signals(sig).name} after step" in " ".join(stdout.split())
    saved = run_state.latest(str(out))
    assert saved is not None and run_state.problem(Path(saved)) is None
    step = int(saved.rsplit("-", 1)[1])
    assert step < 100_000
    assert not (out / "adapter_model.safetensors").exists()  # the final weights' place stays empty: nothing is final
    if sig == signal.SIGTERM:  # the stopped run is no finished run to the commands that load one
        line = (f"medsft: error: {out} holds a run stopped by SIGTERM at step {step}, not a finished one; evaluate, serve "
                f"or merge its checkpoint ({saved}) or resume it with --resume_from_checkpoint true")
        for command in (["eval", out], ["generate", out, "Is it?"], ["merge", out, tmp_path / "merged"]):
            proc = run_cli(*command)
            assert (proc.returncode, proc.stderr.strip().splitlines()[-1:]) == (2, [line]), command
        assert not (tmp_path / "merged").exists()
        proc = run_cli("eval", saved, "--max_test_samples", "6", "--sample_count", "0")  # the checkpoint, as the line says
        assert proc.returncode == 0, proc.stderr
        assert json.loads((Path(saved) / "eval_results.json").read_text())["evaluations"][0]["models"].keys() == {"base", "tuned"}
    resumed = run_cli(recipe, "--resume_from_checkpoint", "true", "--max_steps", str(step + 2))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / run_state.STATE_FILE).read_text()) == {"state": "complete", "step": step + 2}
    if sig == signal.SIGTERM:
        assert run_cli("eval", out, "--max_test_samples", "6", "--sample_count", "0").returncode == 0


def test_a_stopped_run_keeps_its_handlers_until_it_exits_and_a_finished_one_restores_them():
    # under torchrun the first rank out makes the agent SIGTERM the rest, which must exit with 128 + the signal too
    from medsft.training.checkpoints import StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    finished = StopOnSignal()
    finished.install()
    assert signal.getsignal(signal.SIGTERM) == finished._handle
    finished.on_train_end(None, None, None)
    assert signal.getsignal(signal.SIGTERM) == before
    stopped = StopOnSignal()
    try:
        stopped.install()
        os.kill(os.getpid(), signal.SIGTERM)
        control = type("Control", (), {"should_save": False, "should_training_stop": False})()
        stopped.on_step_end(None, None, control)
        assert stopped.stopped_by == signal.SIGTERM and control.should_save and control.should_training_stop
        stopped.on_train_end(None, None, control)
        os.kill(os.getpid(), signal.SIGTERM)  # the launcher's SIGTERM after the stop is ignored, not fatal
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, stopped._previous.get(signal.SIGINT, signal.default_int_handler))


@pytest.mark.parametrize("error, why", [
    (RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:1234: Connection reset by peer"), "lost"),
    (RuntimeError("Application timeout caused pair closure"), "timeout"),  # gloo through DeepSpeed's pending gather
    (RuntimeError("Connection closed by peer [127.0.0.1]:29500"), "lost"),
    (RuntimeError("Timed out waiting 20000ms for recv operation to complete (gloo)"), "timeout"),
    (RuntimeError("CUDA out of memory"), None),  # not a collective's failure: it goes on up
    (ValueError("timeout"), None),
])
def test_a_lost_collective_is_told_from_any_other_error(error, why):
    assert run_state.lost_process(error) == why
