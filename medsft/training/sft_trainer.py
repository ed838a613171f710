"""SFTTrainer with a loss path for completion-only rows that scores only the trained positions, where TRL's cannot.

TRL's fused LM head scores only the trained positions with its Triton kernel (CUDA, XPU); elsewhere (the CPU) it
scores every position of every row through the whole vocabulary, although a PubMedQA row trains 2-3 of its ~400
tokens. There the LM head runs only on the positions that are trained (`logits_to_keep` as a boolean mask), still in
float32 like TRL's kernel, so the loss, entropy and token accuracy are the same numbers for a fraction of the work and
memory (bench/loss_head.py: at a 128,256-row vocabulary). Where TRL's compact path runs, and for batches that train
most positions (language modelling), TRL's own path is taken: its chunking keeps memory flat. Under ZeRO-3 or FSDP
the processes agree on the path batch by batch (one small all-reduce), since TRL's never calls the head module and
this one does: where any rank's batch is dense, all take TRL's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from medsft.models import sharding

# Above this share of positions kept, TRL's chunked kernel is the better tool.
SPARSE_SHARE = 0.5


@contextmanager
def _float32_head(head: torch.nn.Linear):
    """Run the LM head in float32 outside autocast, as TRL's kernel does, so bf16 training loses no precision."""

    def forward(x):
        with torch.autocast(x.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            return F.linear(x.float(), head.weight.float(), bias)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def _compact_in_trl(device: torch.device) -> bool:
    """Whether TRL's fused LM head scores only the trained positions on this device (its Triton kernel)."""
    from transformers.utils import is_triton_available

    return device.type in ("cuda", "xpu") and is_triton_available()


class PackedRows:
    """Collates packed rows (TRL's best-fit-decreasing packing) as a (batch, length) tensor with position ids that
    restart at each document and no attention mask, from which transformers builds a block-diagonal causal mask:
    no token attends across documents, and no document's first token is a label, so nothing is trained across
    them; attention costs batch x length^2. TRL's padding-free collation
    flattens the batch into one row of batch x length, whose dense attention on the CPU is 4x slower."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.collate = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True,
                                                       pad_to_multiple_of=pad_to_multiple_of)

    def __call__(self, examples):
        batch = self.collate(examples)
        batch.pop("attention_mask")
        # A document's first token has nothing of its own before it: as a label it would train the last token of the
        # document packed before it to predict the next document (TRL's padding-free collation masks it too).
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch


def packed_rows(pad_token_id: int, pad_to_multiple_of) -> PackedRows:
    return PackedRows(pad_token_id, None if pad_to_multiple_of == "auto" else pad_to_multiple_of)


class MedsftTrainer(SFTTrainer):
    # model -> {"accuracy": ..., ...}: the task's own metrics on the dev rows, logged beside eval_loss at every
    # evaluation, so that metric_for_best_model can be eval_accuracy (set by train.build_trainer).
    task_metrics = None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self.task_metrics is not None:
            model = self.accelerator.unwrap_model(self.model)
            was_training = model.training
            model.eval()
            with torch.no_grad(), self.autocast_smart_context_manager():
                extra = self.task_metrics(model)
            model.train(was_training)
            output.metrics.update({f"{metric_key_prefix}_{key}": value for key, value in extra.items()})
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        plain = (
            labels is None
            or self.aux_loss_enabled
            or self.compute_loss_func is not None
            or self.label_smoother is not None
            or self.args.loss_type != "nll"
            or type(head) is not torch.nn.Linear  # e.g. a LoRA-wrapped head
        )
        plain = plain or _compact_in_trl(labels.device)
        if not plain:
            target = labels[:, 1:]
            keep = F.pad(target != -100, (0, 1))  # position t predicts token t + 1; the last predicts nothing
            plain = bool(keep.sum() > SPARSE_SHARE * keep.numel())
            if self._sharded(model):  # TRL's path never calls the head module, this one does: under ZeRO-3 every
                plain = sharding.largest(int(plain), labels.device) > 0  # rank must make the same calls
        if plain:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        forward = {k: v for k, v in inputs.items() if k != "labels"}
        with _float32_head(head):
            logits = model(**forward, use_cache=False, logits_to_keep=keep).logits  # (kept, vocab)
        target = target[keep[:, :-1]]
        log_probs = torch.log_softmax(logits, dim=-1)
        token_log_probs = log_probs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        # Counts as tensors on the batch's device: a collective (NCCL) refuses a CPU tensor.
        num_valid = keep.sum()
        num_tokens = num_valid if num_items_in_batch is None else num_items_in_batch
        loss = -token_log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            correct = logits.argmax(-1) == target
        self._log_metrics(inputs, num_valid, entropy.sum(), correct.sum())
        return (loss, {"loss": loss, "logits": logits}) if return_outputs else loss

    def _sharded(self, model) -> bool:
        if not hasattr(self, "_sharded_model"):
            self._sharded_model = sharding.sharded(self.accelerator.unwrap_model(model))
        return self._sharded_model

    def _log_metrics(self, inputs, num_valid, entropy_sum, num_correct) -> None:
        """The metrics TRL's compute_loss logs, from the kept positions (TRL zeroes the others anyway). Every tensor
        gathered here is derived from the batch, so it lives on the batch's device."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        num_valid, entropy_sum, num_correct = gather(num_valid).sum(), gather(entropy_sum).sum(), gather(num_correct).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:  # packed and padding-free rows carry position_ids instead (pads only at row ends)
                local = inputs["position_ids"].new_tensor(inputs["position_ids"].numel())
            self._total_train_tokens += gather(local).sum().item() // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
