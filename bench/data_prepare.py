"""Data prepared once: `python -m medsft preview` of 50,000 prompt-completion rows with an empty data cache, then again
(the rows and their tokens read back, memory-mapped, and the recipe's parse: data/recipe_cache.py), as whole
commands; `python -m medsft --help`; and the data preparation alone (the `prepare` step training runs), first and
second, in one process.

    python bench/data_prepare.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("patient fever cough heart rate blood pressure chest pain imaging normal abnormal treatment dose daily follow "
         "review history").split()


def write_rows(path: Path, n: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            note = " ".join(rng.choice(WORDS) for _ in range(60))
            f.write(json.dumps({"prompt": f"Note: {note}\nQuestion {i}: is it abnormal?\nAnswer:",
                                "completion": " " + rng.choice(["yes", "no"])}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_rows(folder / "rows.jsonl", args.rows)
        recipe = folder / "bench.yaml"
        recipe.write_text(f"model_name_or_path: smollm2-135m-instruct\ntask: prompt_completion\n"
                          f"dataset_name: {folder / 'rows.jsonl'}\nmax_length: 256\nuse_peft: true\nreport_to: none\n")
        env = {**os.environ, "MEDSFT_DATA_CACHE": str(folder / "cache"), "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "medsft", "--help"], env=env, capture_output=True, cwd=ROOT, check=True)
        help_wall = time.perf_counter() - start
        wall = []
        for _ in range(2):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "medsft", "preview", str(recipe), "-n", "1"], env=env,
                                  capture_output=True, text=True, cwd=ROOT)
            wall.append(time.perf_counter() - start)
            if proc.returncode != 0:
                sys.exit(proc.stderr.strip().splitlines()[-1])
        os.environ["MEDSFT_DATA_CACHE"] = str(folder / "cache-in-process")
        sys.path.insert(0, str(ROOT))
        from medsft.recipe.parser import parse_recipe
        from medsft.training.prepare import prepare

        parsed, alone = parse_recipe([str(recipe)]), []
        for _ in range(2):
            start = time.perf_counter()
            prepared = prepare(parsed)
            alone.append(time.perf_counter() - start)
    print(f"{args.rows:,} prompt-completion rows ({len(prepared.train_dataset):,} training rows), SmolLM2 tokenizer, max_length 256")
    print("| what | first (empty cache) s | second s | first / second |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| `python -m medsft preview` (the whole command) | {wall[0]:.1f} | {wall[1]:.1f} | {wall[0] / wall[1]:.1f}x |")
    print(f"second / first: {wall[1] / wall[0]:.2f}; `python -m medsft --help`: {help_wall:.1f} s")
    print(f"| the data preparation alone (`prepare`, in one process) | {alone[0]:.1f} | {alone[1]:.1f} | {alone[0] / alone[1]:.1f}x |")


if __name__ == "__main__":
    main()
