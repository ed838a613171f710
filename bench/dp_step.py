"""DP-SGD's cost, side by side in one run: trained tokens per second of a private LoRA step in medsft (`dp:
{epsilon: 8}`), of the same step without DP, and of a hand-written Opacus + peft script with the same settings
(Poisson batches of the same rate, the same rows tokenized alike, per-example clipping at 1.0, the same noise
multiplier), variants interleaved round by round so machine noise hits them alike; then the memorization audit of
1000 trained and 1000 held-out rows, timed.

    python bench/dp_step.py [--steps 8] [--rounds 2] [--audit-rows 1000]     # --rounds 0: the audit alone

On the embedded SmolLM2-135M-Instruct, the quickstart's LoRA (r 16, all linear layers), batch 8, synthetic notes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsft.recipe.parser import parse_recipe  # noqa: E402
from medsft.training import fit, prepare  # noqa: E402

torch.set_num_threads(2)


def recipe(out: str, steps: int, private: bool, rows: int = 400):
    args = [str(ROOT / "recipes" / "quickstart.yaml"), "--output_dir", out, "--overwrite_output_dir", "true",
            "--max_steps", str(steps), "--synthetic_size", str(rows), "--logging_steps", "1", "--disable_tqdm", "true",
            "--eval_after_train", "false", "--lora_dropout", "0.0"]
    if private:
        args += ["--dp", '{"epsilon": 8}']
    return parse_recipe(args)


class Counted:
    """A collator that counts the trained tokens (labels not -100) it hands out."""

    def __init__(self, collate):
        self.collate, self.tokens = collate, 0

    def __call__(self, rows):
        batch = self.collate(rows)
        if batch:
            self.tokens += int((batch["labels"][:, 1:] != -100).sum())
        return batch


def medsft_rate(steps: int, private: bool) -> float:
    """Trained tokens per second over the steps after the first, medsft as a user runs it."""
    from transformers import PrinterCallback, TrainerCallback

    times = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append((time.perf_counter() - self.start, counter.tokens))

    with tempfile.TemporaryDirectory() as out:
        r = recipe(out, steps, private)
        trainer = fit.build_trainer(r, prepare.prepare(r), callbacks=[Clock()])
        trainer.remove_callback(PrinterCallback)
        counter = Counted(trainer.data_collator)
        trainer.data_collator = counter  # the Poisson loader wraps it for empty draws
        trainer.train()
    # the loader collates a batch before its step begins: tokens of step i are counted by the end of step i
    seconds = [t for t, _ in times[1:]]
    tokens = times[-1][1] - times[0][1]
    return tokens / sum(seconds)


def opacus_rate(steps: int, noise: float) -> float:
    """A hand-written DP-SGD loop: peft's LoRA, Opacus's PrivacyEngine (Poisson loader, per-example clipping), the
    loss each row's mean over its trained tokens, the same rows and batch."""
    from opacus import PrivacyEngine
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import AutoModelForCausalLM

    from medsft.models import locate

    with tempfile.TemporaryDirectory() as out:
        r = recipe(out, steps, False)
        prepared = prepare.prepare(r)
    rows = [{"input_ids": x["input_ids"], "labels": x["labels"]} for x in prepared.train_dataset]
    pad = prepared.tokenizer.pad_token_id

    def collate(batch):
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
            labels[i, : len(b["labels"])] = torch.tensor(b["labels"])
            mask[i, : len(b["input_ids"])] = 1
        return ids, mask, labels

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(locate.resolve(r.model.model_name_or_path))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loader = DataLoader(rows, batch_size=8, collate_fn=collate, shuffle=True)
    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                   noise_multiplier=noise, max_grad_norm=1.0, poisson_sampling=True)
    model.train()
    times, tokens = [], []
    for step, (ids, mask, labels) in enumerate(loader):
        if step >= steps:
            break
        start = time.perf_counter()
        optimizer.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        token = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1),
                                                  ignore_index=-100, reduction="none").view(target.shape)
        per_row = token.sum(1) / (target != -100).sum(1).clamp(min=1)
        per_row.mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        tokens.append(int((target != -100).sum()))
    return sum(tokens[1:]) / sum(times[1:])


def audit_seconds(rows: int) -> tuple[float, dict]:
    """The audit of `rows` trained and as many held-out rows on the untrained embedded model, timed."""
    from medsft.evaluation.audit_run import audit
    from medsft.models import locate
    from medsft.models.tokenizer import load_tokenizer
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as out:
        r = recipe(out, 1, False, rows=int(rows * 2.3))
        prepared = prepare.prepare(r)
    path = locate.resolve(r.model.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    start = time.perf_counter()
    found = audit(r, model, load_tokenizer(path), prepared.datasets, [], 0, rows=rows)
    return time.perf_counter() - start, found["rows"]


def throughput(steps: int, rounds: int) -> None:
    """The three variants, interleaved round by round, and their ratios."""
    with tempfile.TemporaryDirectory() as out:
        r = recipe(out, steps, True)
        from medsft.training.private import plan

        noise = plan(r.script.dp, r.training, 180).noise_multiplier
    rates: dict[str, list[float]] = {"medsft dp": [], "medsft (no dp)": [], "Opacus + peft by hand": []}
    for _ in range(rounds):
        rates["medsft dp"].append(medsft_rate(steps, True))
        rates["medsft (no dp)"].append(medsft_rate(steps, False))
        rates["Opacus + peft by hand"].append(opacus_rate(steps, noise))
    print(f"SmolLM2-135M-Instruct, LoRA r 16 all-linear, batch 8 (Poisson for DP, noise {noise:.3f}), {steps} "
          f"steps x {rounds} rounds, median trained tokens/s")
    print("| variant | trained tokens/s | runs |")
    print("| --- | ---: | --- |")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    dp, plain, hand = (statistics.median(v) for v in rates.values())
    print(f"medsft dp / medsft without dp: {dp / plain:.2f}x; medsft dp / hand-written Opacus + peft: {dp / hand:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--audit-rows", type=int, default=1000)
    args = parser.parse_args()
    if args.rounds > 0:  # --rounds 0: the audit's timing alone
        throughput(args.steps, args.rounds)
    seconds, rows = audit_seconds(args.audit_rows)
    print(f"audit of {rows['trained']} trained and {rows['heldout']} held-out rows (prefix 32, suffix 32): "
          f"{seconds / 60:.1f} min")

if __name__ == "__main__":
    main()
