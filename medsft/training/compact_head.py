"""TRL's fused LM head on the CPU scoring only the completion's positions, as it does where its Triton kernel runs.

TRL's fused head (GRPO, DPO, KTO) scores only the completion's positions with its Triton kernel (CUDA, XPU), and
every position elsewhere (on Neuron the tile shapes would recompile at each batch): on the CPU, eager, the
completion's positions alone are the same log-probabilities for a fraction of the work (8 of ~300 positions a reply
here), as medsft's SFT path does."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def compact_head_on_cpu():
    from trl.trainer import utils

    original = utils._use_triton
    utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        utils._use_triton = original
