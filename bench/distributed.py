"""Training throughput under each way of running, side by side in one run, on the same recipe and global batch.

    python bench/distributed.py [--recipe recipes/quickstart.yaml] [--steps 10] [--batch 8] [--rounds 1]

Variants (launched exactly as a user would, `accelerate launch --config_file accelerate_configs/X.yaml -m medsft`):
  1 process     single_process.yaml, all cores to the one process
  DDP x2        multi_process.yaml, 2 processes
  ZeRO-2 x2     zero2.yaml
  ZeRO-3 x2     zero3.yaml
The global batch is the same everywhere (`--batch` rows a step, split over the processes) and the machine's cores
are shared out among the processes. Prints trained tokens/s (non-padding tokens over the trainer's train_runtime,
first step included) and the ratio to one process; with --rounds > 1 the variants are interleaved and medians shown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsft.runs import records  # noqa: E402
VARIANTS = (("1 process", "single_process", 1), ("DDP x2", "multi_process", 2), ("ZeRO-2 x2", "zero2", 2), ("ZeRO-3 x2", "zero3", 2))


def run(config: str, processes: int, recipe: str, steps: int, batch: int, out: Path) -> tuple[float, float]:
    """(tokens/s, seconds) of one launch."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}.yaml",
           "--num_processes", str(processes), "--num_cpu_threads_per_process", str(threads), "-m", "medsft", recipe,
           "--max_steps", str(steps), "--per_device_train_batch_size", str(batch // processes),
           "--output_dir", str(out), "--overwrite_output_dir", "true", "--eval_after_train", "false",
           "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{config} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    state = json.loads((out / records.TRAINER_STATE).read_text())
    runtime = next(h["train_runtime"] for h in reversed(state["log_history"]) if "train_runtime" in h)
    return state["num_input_tokens_seen"] / runtime, runtime


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="global batch: rows a step over all processes")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, config, processes in VARIANTS:
                rate, secs = run(config, processes, args.recipe, args.steps, args.batch, Path(tmp) / f"{config}-{r}")
                rates[name].append(rate)
                seconds[name].append(secs)
                print(f"round {r + 1}: {name:10s} {rate:8.1f} tokens/s ({secs:.1f} s)", flush=True)
    base = statistics.median(rates["1 process"])
    print(f"\n{args.recipe}, {args.steps} steps, global batch {args.batch}, {os.cpu_count()} cores, medians of {args.rounds}")
    print(f"{'variant':12s} {'tokens/s':>9s} {'seconds':>8s} {'vs 1 process':>13s}")
    for name, _, _ in VARIANTS:
        rate = statistics.median(rates[name])
        print(f"{name:12s} {rate:9.1f} {statistics.median(seconds[name]):8.1f} {rate / base:13.2f}")


if __name__ == "__main__":
    main()
