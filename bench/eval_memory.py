"""Evaluation memory at a released vocabulary: `python -m medsft eval` of a `text` task (perplexity) on a tiny
Llama-shaped model with Llama-3's 128,256-row vocabulary (16.5M parameters), 32 MTSamples notes of up to 1024 tokens,
eval batch 8: peak RSS, wall time and the perplexity, for this checkout and, side by side in the same run, another
one (`--against PATH`, e.g. a checkout before the change).

    python bench/eval_memory.py [--against OLD_CHECKOUT] [--notes 32] [--max-length 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import DATA

from medsft.runs import records

ROOT = Path(__file__).resolve().parents[1]
MEASURE = "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); " \
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)"


def build(folder: Path, notes: list[str]) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from medsft.models import scratch

    tokenizer = scratch.train_tokenizer(notes, vocab_size=4096)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128_256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocabulary {config.vocab_size:,}")
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model"


def run(checkout: Path, recipe: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "medsft", "eval", str(recipe), "--output_dir", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=checkout)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{checkout}: {proc.stderr.strip().splitlines()[-1:]}")
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    [evaluation] = json.loads((out / records.EVAL_RESULTS).read_text())["evaluations"]
    return {"peak_gb": peak_kb / 2**20, "seconds": seconds, "perplexity": evaluation["models"]["base"]["perplexity"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", type=Path, default=None, help="another checkout, measured side by side")
    parser.add_argument("--notes", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args()
    source = DATA / "reports" / "mtsamples.jsonl"
    if not source.is_file():
        sys.exit(f"needs the MTSamples notes at {source}")
    notes = [json.loads(line)["text"] for line in source.read_text().splitlines() if line.strip()]
    long_notes = sorted(notes, key=len, reverse=True)[: args.notes]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build(folder, notes[:400])
        data = folder / "notes.jsonl"
        data.write_text("".join(json.dumps({"text": n}) + "\n" for n in long_notes))
        recipe = folder / "bench.yaml"
        recipe.write_text(yaml.safe_dump({
            "model_name_or_path": str(model), "task": "text", "data_files": {"test": str(data)},
            "max_length": args.max_length, "per_device_eval_batch_size": 8, "sample_count": 0, "report_to": "none"}))
        checkouts = {"this checkout": ROOT, **({f"{args.against}": args.against} if args.against else {})}
        results = {name: run(path, recipe, folder / f"out-{i}") for i, (name, path) in enumerate(checkouts.items())}
    print(f"`medsft eval`, text task, {args.notes} notes of up to {args.max_length} tokens, eval batch 8")
    print("| checkout | peak RSS GB | seconds | perplexity |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['peak_gb']:.2f} | {r['seconds']:.1f} | {r['perplexity']:.6f} |")
    if len(results) == 2:
        mine, other = results.values()
        print(f"peak RSS ratio {mine['peak_gb'] / other['peak_gb']:.2f}x, wall ratio {mine['seconds'] / other['seconds']:.2f}x, "
              f"perplexity relative difference {abs(mine['perplexity'] - other['perplexity']) / other['perplexity']:.2e}")


if __name__ == "__main__":
    main()
