"""A DPO step: medsft's `trainer: dpo` beside a hand-written TRL `DPOTrainer` script with the same model, pairs and
settings, side by side in one run.

    python bench/dpo_step.py [--pairs 48] [--batch 4] [--rounds 1]      # ~4 minutes on 2 cores

Both train one epoch over the same PubMedQA pairs (official training split; the key's decision and conclusion against
each other option, as recipes/pubmedqa_dpo.yaml builds them) from the embedded SmolLM2-135M-Instruct with a new LoRA
adapter (r 16, all linear layers), beta 0.1, the same learning rate, batch, max_length, precision, activation
checkpointing (off on the CPU, as medsft's recipe resolves it; TRL's own default is on) and seed. The
hand-written script gets the pairs as text (the prompt, chosen and rejected strings medsft renders) and lets
DPOTrainer tokenize them, as a user writing one would. Each variant runs in its own process, so that its peak memory
is its own (RSS on the CPU, allocated memory on a GPU). Prints, per variant, trained tokens/s (the non-padding
tokens of chosen and rejected sequences, the first step left out as warm-up), the peak, and the first and last
losses (both start at log 2 = 0.693: the same loss by two routes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import DATA as SHARED  # noqa: E402

DATA = SHARED / "pubmedqa" / "ori_pqal.json"
MODEL = "smollm2-135m-instruct"


def recipe(pairs: int, batch: int, out: str):
    from medsft.recipe.parser import parse_recipe

    args = [str(ROOT / "recipes" / "pubmedqa_dpo.yaml"), "--model_name_or_path", MODEL, "--dataset_name", str(DATA),
            "--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules", "all-linear",
            "--max_train_samples", str(pairs // 2), "--per_device_train_batch_size", str(batch),
            "--num_train_epochs", "1", "--output_dir", out, "--eval_strategy", "no", "--save_strategy", "no",
            "--calibrate", "false", "--logging_steps", "1", "--disable_tqdm", "true"]
    return parse_recipe(args)


class Counted:
    """The trainer's collator, counting each batch's non-padding tokens (chosen and rejected sequences)."""

    def __init__(self, collator):
        self.collator, self.tokens = collator, []

    def __call__(self, examples):
        batch = self.collator(examples)
        self.tokens.append(int(batch["attention_mask"].sum()))
        return batch


class Timer:
    """Each step's wall time (synchronised with the device) and every logged loss."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.times, self.losses, self._t = [], [], 0.0

            def _sync(self, args):
                import torch

                if args.device.type == "cuda":
                    torch.cuda.synchronize(args.device)

            def on_step_begin(self, args, state, control, **kwargs):
                self._sync(args)
                self._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self._sync(args)
                self.times.append(time.perf_counter() - self._t)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    self.losses.append(logs["loss"])

        return _Timer()


def medsft_trainer(pairs: int, batch: int, out: str, timer):
    from medsft.training import fit, prepare

    r = recipe(pairs, batch, out)
    return fit.build_trainer(r, prepare.prepare(r), callbacks=[timer])


def trl_trainer(pairs: int, batch: int, out: str, timer):
    """What a user writes by hand: prompt / chosen / rejected strings, DPOTrainer tokenizes, the same settings."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from medsft.models import locate
    from medsft.training import prepare

    r = recipe(pairs, batch, out)  # only to read the same pairs' text and the same settings
    a, m = r.training, r.model
    path = locate.resolve(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = lambda ids: tokenizer.decode(ids)  # noqa: E731
    rows = [{"prompt": text(p["prompt_ids"]), "chosen": text(p["chosen_ids"]), "rejected": text(p["rejected_ids"])}
            for p in prepare.prepare(r).train_dataset]
    config = DPOConfig(output_dir=out, num_train_epochs=1, per_device_train_batch_size=batch, learning_rate=a.learning_rate,
                       lr_scheduler_type=a.lr_scheduler_type, warmup_steps=a.warmup_steps, beta=a.beta,
                       max_length=a.max_length, use_cpu=a.use_cpu, bf16=a.bf16, logging_steps=1, save_strategy="no",
                       # TRL's default checkpoints activations; medsft's recipe does not on the CPU: the same here
                       gradient_checkpointing=a.gradient_checkpointing, activation_checkpointing=a.gradient_checkpointing,
                       report_to="none", seed=a.seed, disable_tqdm=True)
    lora = LoraConfig(r=m.lora_r, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                      target_modules=m.lora_target_modules, task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path)
    return DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                      peft_config=lora, callbacks=[timer])


def measure(variant: str, pairs: int, batch: int) -> dict:
    """One variant in this process: one epoch, then its rate, peak and losses."""
    import resource

    import datasets
    import torch
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    timer = Timer()
    with tempfile.TemporaryDirectory() as out:
        trainer = (medsft_trainer if variant == "medsft" else trl_trainer)(pairs, batch, out, timer)
        trainer.data_collator = counted = Counted(trainer.data_collator)
        cuda = trainer.args.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
    steps = len(timer.times)
    tokens = counted.tokens[1:steps]  # the first step warms up
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens_per_s": sum(tokens) / sum(timer.times[1:]), "steps": steps, "peak": peak,
            "memory": "GPU allocated" if cuda else "RSS", "losses": [timer.losses[0], timer.losses[-1]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=48, help="training pairs per variant (one epoch)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="variants interleaved round by round; medians reported")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child process: measure one variant, print JSON
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.pairs, args.batch)))
        return
    if not DATA.is_file():
        sys.exit(f"needs the PubMedQA data at {DATA} (set MEDSFT_DATA)")
    names = ["medsft", "trl"]
    results = {k: [] for k in names}
    for r in range(args.rounds):
        for name in names:
            child = subprocess.run([sys.executable, __file__, "--variant", name, "--pairs", str(args.pairs),
                                    "--batch", str(args.batch)], capture_output=True, text=True)
            if child.returncode:
                sys.exit(f"{name} failed:\n{child.stderr[-3000:]}")
            got = json.loads(child.stdout.strip().splitlines()[-1])
            results[name].append(got)
            print(f"round {r + 1} {name:7s} {got['tokens_per_s']:8.1f} trained tokens/s, {got['steps']} steps, "
                  f"peak {got['memory']} {got['peak'] / 2**30:.2f} GiB, loss {got['losses'][0]:.4f} -> {got['losses'][1]:.4f}",
                  flush=True)
    rate = {k: statistics.median(g["tokens_per_s"] for g in v) for k, v in results.items()}
    peak = {k: statistics.median(g["peak"] for g in v) for k, v in results.items()}
    print(f"\n{args.pairs} pairs, batch {args.batch}, {args.rounds} round(s): medsft / hand-written TRL: "
          f"trained tokens/s {rate['medsft'] / rate['trl']:.2f}x, peak memory {peak['medsft'] / peak['trl']:.2f}x")


if __name__ == "__main__":
    main()
