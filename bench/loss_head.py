"""The training loss at a released vocabulary: medsft's completion-only path (the LM head run on the trained positions
only, in float32) against TRL's own (its fused LM head: log-probabilities in chunks, never the whole logits), side by
side in one run, on a tiny Llama-shaped model with Llama-3's 128,256-row vocabulary.

    python bench/loss_head.py [--steps 6] [--batch 4] [--length 512] [--trained 4]

Each variant runs in its own process (so that its peak memory is its own): forward + backward + AdamW step on the same
batch, `--trained` answer tokens a row (PubMedQA's answer and end of turn), and a language-modelling batch (every
token trained), where medsft hands the loss to TRL's path. Prints tokens/s and the peak (RSS on the CPU, allocated
memory on a GPU), and the loss each computed (the same numbers by two routes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def trainer_for(variant: str, model, out: str):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    from medsft.training.sft_trainer import MedsftTrainer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>")),
                                  pad_token="<pad>", eos_token="<pad>")
    args = SFTConfig(output_dir=out, report_to=[], use_cpu=not torch.cuda.is_available(), bf16=False, max_length=None,
                     completion_only_loss=False)
    cls = MedsftTrainer if variant == "medsft" else SFTTrainer
    return cls(model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": [[2, 3]]}), processing_class=tok)


def measure(variant: str, kind: str, steps: int, batch: int, length: int, trained: int) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128_256, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=4096)
    model = LlamaForCausalLM(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = trainer_for(variant, model, tmp)
        model = trainer.model.to(device).train()
        ids = torch.randint(10, 128_000, (batch, length), device=device)
        labels = ids.clone() if kind == "lm" else torch.full_like(ids, -100)
        if kind != "lm":
            labels[:, -trained:] = ids[:, -trained:]
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times, losses = [], []
        for step in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            loss = trainer.compute_loss(model, dict(inputs))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step:  # the first step warms up
                times.append(time.perf_counter() - start)
            losses.append(loss.item())
    import resource

    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times.sort()
    return {"tokens_per_s": batch * length / times[len(times) // 2], "peak_gb": peak / 2**30, "first_loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--trained", type=int, default=4)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # variant kind: measure in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.batch, args.length, args.trained)))
        return
    rows = {}
    for kind in ("completion", "lm"):
        for variant in ("medsft", "trl"):
            proc = subprocess.run([sys.executable, __file__, "--one", variant, kind, "--steps", str(args.steps), "--batch",
                                   str(args.batch), "--length", str(args.length), "--trained", str(args.trained)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(proc.stderr.strip().splitlines()[-1])
            rows[kind, variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"{where}; vocabulary 128,256; batch {args.batch} x {args.length} tokens; {args.trained} trained tokens a row "
          f"(completion) or all (lm); median of {args.steps} steps")
    print("| batch | loss path | tokens/s | peak GB | first loss |")
    print("| --- | --- | ---: | ---: | ---: |")
    for (kind, variant), r in rows.items():
        path = {"medsft": "medsft (MedsftTrainer)", "trl": "TRL's fused LM head (SFTTrainer)"}[variant]
        print(f"| {kind} | {path} | {r['tokens_per_s']:.0f} | {r['peak_gb']:.2f} | {r['first_loss']:.4f} |")
    for kind in ("completion", "lm"):
        m, t = rows[kind, "medsft"], rows[kind, "trl"]
        print(f"{kind}: medsft / TRL tokens/s {m['tokens_per_s'] / t['tokens_per_s']:.2f}x, peak {m['peak_gb'] / t['peak_gb']:.2f}x")


if __name__ == "__main__":
    main()
