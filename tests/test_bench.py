"""The benchmarks' device handling, on the CPU: timings synchronised with the device, peaks measured on it."""

import sys
from types import SimpleNamespace

import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import common  # noqa: E402


def test_the_device_follows_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert common.device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert common.device().type == "cuda"


def test_timings_wait_for_the_device(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda where=None: waited.append(where))
    common.synchronize(torch.device("cpu"))
    assert waited == []  # nothing to wait for on the CPU
    timer = common.StepTimer(warmup=0)
    args, state = SimpleNamespace(device=torch.device("cuda", 0)), SimpleNamespace(num_input_tokens_seen=0, global_step=1)
    timer.on_step_begin(args, state, None)
    state.num_input_tokens_seen = 40
    timer.on_step_end(args, state, None)
    assert waited == [torch.device("cuda", 0)] * 2 and timer.tokens == [40] and len(timer.times) == 1


def test_matmul_peak_runs_on_the_given_device():
    assert common.matmul_peak(torch.float32, n=64, repeats=2, where=torch.device("cpu")) > 0
    assert common.peak_memory(torch.device("cpu")) is None


def test_the_timer_keeps_the_logged_training_losses_only():
    timer = common.StepTimer()
    for logs in ({"loss": 2.5, "grad_norm": 1.0}, {"eval_loss": 9.0}, {"train_runtime": 3.0}, {"loss": 2.25}):
        timer.on_log(None, None, None, logs=logs)
    assert timer.losses == [2.5, 2.25]
