"""`dp: {epsilon, delta, max_grad_norm}`: DP-SGD through Opacus in medsft's SFT trainer, LoRA or full.

- Poisson sampling: each step's logical batch draws every training row independently with probability q =
  per_device_train_batch_size x gradient_accumulation_steps / rows (Opacus's UniformWithReplacementSampler), so
  its size varies; the step splits it into physical chunks of per_device_train_batch_size (the accumulation), and
  the optimizer steps once per logical batch.
- Per-example gradients of the trained parameters only (Opacus's hooks on the modules that hold them: LoRA's
  matrices, or every weight of a full run), each example's loss its trained tokens' mean; each clipped to
  max_grad_norm, summed, Gaussian noise of noise_multiplier x max_grad_norm added, divided by the expected batch
  (Opacus's DPOptimizer). The transformers Trainer's own clipping is off: it would clip the sum.
- The noise multiplier is calibrated by Opacus's accountant to spend epsilon at delta over the planned steps; the
  budget spent is recomputed from the steps taken (noise multiplier, sample rate, steps), so a run resumed from a
  checkpoint ends at the epsilon of an uninterrupted one. run_state.json records it (privacy).

What cannot be made private is refused before anything loads (recipe/privacy_keys.py): another trainer, packing,
DeepSpeed or FSDP; here, a run of several processes (Opacus's per-example clipping in one process) and a delta not
below 1 / rows."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medsft.errors import UserError
from medsft.training.sft_trainer import MedsftTrainer, _float32_head


@dataclass(frozen=True)
class Plan:
    epsilon: float
    delta: float
    max_grad_norm: float
    accountant: str
    sample_rate: float
    steps: int  # planned optimizer steps, the noise calibrated for them
    noise_multiplier: float
    logical_batch: int


def plan(settings: dict, args, rows: int, processes: int = 1) -> Plan:
    """The noise that spends `settings['epsilon']` over the run's planned steps, at its sample rate."""
    from opacus.accountants.utils import get_noise_multiplier

    if processes > 1:
        raise UserError(f"dp trains in one process (Opacus clips each example's gradient where it is computed), and this "
                        f"run has {processes}; run it without accelerate's processes (python -m medsft RECIPE)")
    delta = settings["delta"] if settings["delta"] is not None else 1 / (2 * rows)
    if delta >= 1 / rows:
        raise UserError(f"dp: delta {delta:g} is not below 1 / training rows (1/{rows} = {1 / rows:.3g}): a mechanism may "
                        "then reveal a whole row with probability delta; give a smaller delta (default 1 / (2 x rows))")
    logical = args.per_device_train_batch_size * args.gradient_accumulation_steps
    if logical >= rows:
        raise UserError(f"dp: the logical batch ({logical}: per_device_train_batch_size x gradient_accumulation_steps) "
                        f"must be smaller than the {rows} training rows, each drawn into it with probability batch / rows")
    q = logical / rows
    steps = args.max_steps if args.max_steps and args.max_steps > 0 else math.ceil(args.num_train_epochs * int(1 / q))
    with _accounting(settings["accountant"]):
        sigma = get_noise_multiplier(target_epsilon=settings["epsilon"], target_delta=delta, sample_rate=q, steps=steps,
                                     accountant=settings["accountant"])
    return Plan(settings["epsilon"], delta, settings["max_grad_norm"], settings["accountant"], q, steps, sigma, logical)


@contextmanager
def _accounting(accountant: str):
    """Opacus's prv accountant sizes its domain with an rdp bound at a tiny delta, which warns that rdp's orders ran
    out: a remark on that inner bound, not on the epsilon reported, so it is not shown. Under rdp it stays."""
    with warnings.catch_warnings():
        if accountant == "prv":
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def spent(p: Plan, steps: int) -> dict:
    """The privacy record after `steps` optimizer steps: epsilon recomputed by Opacus's accountant from the noise
    multiplier, the sample rate and the steps."""
    from opacus.accountants import create_accountant

    accountant = create_accountant(p.accountant)
    accountant.history = [(p.noise_multiplier, p.sample_rate, steps)] if steps else []
    with _accounting(p.accountant):
        epsilon = accountant.get_epsilon(p.delta) if steps else 0.0
    return {"epsilon": float(epsilon), "delta": p.delta, "noise_multiplier": p.noise_multiplier,
            "sample_rate": p.sample_rate, "steps": steps, "planned_steps": p.steps, "max_grad_norm": p.max_grad_norm,
            "accountant": p.accountant, "target_epsilon": p.epsilon}


def summary(record: dict | None) -> list[tuple[str, str]]:
    """The training summary's row for a private run."""
    if record is None:
        return []
    return [("privacy", f"epsilon {record['epsilon']:.2f} at delta {record['delta']:.2g} (target {record['target_epsilon']:g}; "
                        f"noise {record['noise_multiplier']:.3f}, sample rate {record['sample_rate']:.3g}, "
                        f"{record['steps']} steps, clipped at {record['max_grad_norm']:g}, {record['accountant']})")]


class _Collate:
    """The trainer's collator, or nothing for an empty Poisson draw."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows):
        return self.collate(rows) if rows else {}


class PrivateTrainer(MedsftTrainer):
    """MedsftTrainer with DP-SGD (module docstring). Built by the sft trainer unit when the recipe has `dp`."""

    privacy: Plan | None = None

    def __init__(self, *args, privacy: Plan, **kwargs):
        from opacus import GradSampleModule

        config = kwargs["args"]
        self.physical = config.per_device_train_batch_size
        config.gradient_accumulation_steps = 1  # one optimizer step per Poisson draw; its chunks are accumulated here
        config.max_grad_norm = 0.0  # the batch's clipping: each example's is the DP optimizer's
        config.ignore_data_skip = True  # each step draws afresh: there is no order to skip to on resume
        super().__init__(*args, **kwargs)
        self.privacy = privacy
        self.hooks = GradSampleModule(self.model, loss_reduction="sum")  # per-example gradients of trained weights

    def trained_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def create_optimizer(self, model=None):
        from opacus.optimizers import DPOptimizer

        optimizer = super().create_optimizer(model) if model is not None else super().create_optimizer()
        if not isinstance(optimizer, DPOptimizer):
            generator = torch.Generator().manual_seed(self.args.seed)
            self.optimizer = DPOptimizer(optimizer, noise_multiplier=self.privacy.noise_multiplier,
                                         max_grad_norm=self.privacy.max_grad_norm,
                                         expected_batch_size=self.privacy.logical_batch, loss_reduction="mean",
                                         generator=generator)
        return self.optimizer

    def get_train_dataloader(self):
        from opacus.utils.uniform_sampler import UniformWithReplacementSampler
        from torch.utils.data import DataLoader

        dataset = self._remove_unused_columns(self.train_dataset, description="training")
        sampler = UniformWithReplacementSampler(num_samples=len(dataset), sample_rate=self.privacy.sample_rate,
                                                generator=torch.Generator().manual_seed(self.args.seed))
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=_Collate(self.data_collator),
                          num_workers=self.args.dataloader_num_workers)

    def row_losses(self, model, inputs) -> torch.Tensor:
        """Each row's loss: the mean negative log-probability of its trained tokens (the LM head run on those
        positions only, in float32, as the SFT loss does)."""
        labels = inputs["labels"]
        target = labels[:, 1:]
        keep = F.pad(target != -100, (0, 1))
        head = self.accelerator.unwrap_model(model).get_output_embeddings()
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        with _float32_head(head):
            logits = model(**forward, use_cache=False, logits_to_keep=keep).logits  # (kept, vocab)
        token = -torch.log_softmax(logits, -1).gather(-1, target[keep[:, :-1]].unsqueeze(-1)).squeeze(-1)
        rows = keep.nonzero()[:, 0]
        total = torch.zeros(len(labels), dtype=token.dtype, device=token.device).index_add(0, rows, token)
        counts = torch.bincount(rows, minlength=len(labels)).clamp(min=1)
        return total / counts

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        self.optimizer.zero_grad()  # a new logical batch: the last one's per-example gradients are spent (Opacus's check)
        if not inputs:  # an empty Poisson draw: the step adds noise alone
            for p in self.trained_parameters():
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            return torch.tensor(0.0, device=self.args.device)
        inputs = self._prepare_inputs(inputs)
        rows = len(inputs["labels"])
        total = torch.zeros((), device=self.args.device)
        for start in range(0, rows, self.physical):
            chunk = {k: v[start : start + self.physical] for k, v in inputs.items()}
            with self.compute_loss_context_manager():
                losses = self.row_losses(model, chunk)
            self.accelerator.backward(losses.sum())
            total += losses.detach().sum()
        return total / rows
