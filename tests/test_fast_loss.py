"""medsft's completion-only loss path gives TRL's numbers: per-step loss, entropy and token accuracy."""

import pytest
import torch

from medsft.training import fit
from medsft.training import prepare
from medsft.training import sft_trainer as fast
from medsft.recipe.parser import parse_recipe


def run(path, monkeypatch, use_fast, **keys):
    args = [str(path)] + [x for k, v in keys.items() for x in (f"--{k}", str(v))]
    recipe = parse_recipe(args)
    prepared = prepare.prepare(recipe)
    calls = []
    original = fast.SFTTrainer.compute_loss
    monkeypatch.setattr(fast.SFTTrainer, "compute_loss", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    if not use_fast:  # every batch takes TRL's own fused-head path
        monkeypatch.setattr(fast, "SPARSE_SHARE", -1.0)
    t = fit.build_trainer(recipe, prepared)
    t.train()
    monkeypatch.undo()
    assert bool(calls) != use_fast, "the fast path must not fall back to TRL's, and TRL's must be used when asked"
    return [h for h in t.state.log_history if "loss" in h]


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("include_long_answer", [False, True])
def test_fast_path_matches_trl_per_step(write_recipe, monkeypatch, bf16, include_long_answer):
    path = write_recipe(max_steps=6, include_long_answer=include_long_answer, gradient_accumulation_steps=2)
    ours = run(path, monkeypatch, True, bf16=bf16)
    trls = run(path, monkeypatch, False, bf16=bf16)
    assert len(ours) == len(trls) == 6
    for a, b in zip(ours, trls):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-3)
        assert a["entropy"] == pytest.approx(b["entropy"], abs=1e-3)
        # a random tiny model has near-tied logits: two fp32 summation orders may flip one argmax in a step
        assert a["mean_token_accuracy"] == pytest.approx(b["mean_token_accuracy"], abs=0.1)
        assert a["num_tokens"] == b["num_tokens"]
    assert ours[-1]["loss"] < ours[0]["loss"]


def test_language_modelling_takes_trls_path(write_recipe, monkeypatch):
    calls = []
    original = fast.SFTTrainer.compute_loss
    monkeypatch.setattr(fast.SFTTrainer, "compute_loss", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    recipe = parse_recipe([str(write_recipe(task="report", max_steps=1))])
    fit.build_trainer(recipe, prepare.prepare(recipe)).train()
    assert calls, "every token is trained: TRL's chunked kernel is the right tool"


class OnBatchDevice(torch.Tensor):
    """Stands for a tensor on the batch's GPU: what an op derives from it stays there (torch propagates the
    subclass), while a fresh torch.tensor(...) without the batch's device is a plain CPU tensor."""


@pytest.mark.parametrize("packing", [False, True])
def test_every_tensor_handed_to_a_collective_lives_on_the_batchs_device(write_recipe, packing):
    """NCCL refuses a CPU tensor: the gather here refuses any tensor not derived from the batch or the model's
    outputs, on the completion-only path (attention mask) and on packed rows (position ids)."""
    recipe = parse_recipe([str(write_recipe(packing=packing, per_device_train_batch_size=3))])
    trainer = fit.build_trainer(recipe, prepare.prepare(recipe))
    model = trainer.model
    model.register_forward_hook(lambda module, args, kwargs, out: setattr(out, "logits", out.logits.as_subclass(OnBatchDevice)),
                                with_kwargs=True)
    gathered = []

    def gather(tensor):
        if not isinstance(tensor, OnBatchDevice):
            raise RuntimeError("gather: a tensor on cpu for a batch on cuda:0 (NCCL refuses it)")
        gathered.append(tensor)
        return tensor

    trainer.accelerator.gather_for_metrics = gather
    batch = {k: v.as_subclass(OnBatchDevice) for k, v in next(iter(trainer.get_train_dataloader())).items()}
    assert ("position_ids" in batch) == packing and ("attention_mask" in batch) != packing
    model.train()
    loss = trainer.compute_loss(model, batch)
    assert torch.isfinite(loss) and len(gathered) == 4  # valid tokens, entropy, correct tokens, tokens seen
