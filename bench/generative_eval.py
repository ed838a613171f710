"""The embedded model's answers against its likelihoods, on PubMedQA's official test split (500) and MedQA-USMLE's
test set (1273): `python -m medsft eval` with `scoring: both` on each, its chat template on (an instruct model
answers a user), greedy replies of at most 16 tokens, batched. Prints each benchmark's strict and lenient accuracy,
the unparseable share and the likelihood accuracy, with 95% intervals, and the wall time of each evaluation.

    python bench/generative_eval.py [--limit N] [--only medqa] [--out outputs/bench-generative]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import DATA

from medsft.runs import records

BENCHMARKS = {
    "pubmedqa": {"task": "pubmedqa", "dataset_name": str(DATA / "pubmedqa" / "ori_pqal.json")},
    "medqa": {"task": "medqa", "data_files": {"test": str(DATA / "mcq" / "medqa.jsonl")}},
}


def percent(value: float, ci: list[float] | None) -> str:
    return f"{100 * value:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="score a stratified subset of each test split")
    parser.add_argument("--out", default="outputs/bench-generative")
    parser.add_argument("--only", choices=list(BENCHMARKS), default=None, help="run one benchmark")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in BENCHMARKS.items():
            if args.only not in (None, name):
                continue
            recipe = {"model_name_or_path": "smollm2-135m-instruct", **data, "chat": True, "scoring": "both",
                      "answer_max_new_tokens": 16, "per_device_eval_batch_size": 16, "max_length": 512,
                      "sample_count": 0, "report_to": "none", "output_dir": f"{args.out}/{name}"}
            if args.limit:
                recipe["max_test_samples"] = args.limit
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(recipe))
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "medsft", "eval", str(path), "--output_dir", f"{args.out}/{name}"],
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return proc.returncode
            results = json.loads((Path(args.out) / name / records.EVAL_RESULTS).read_text())
            by = {e["scoring"]: e for e in results["evaluations"]}
            likelihood, generated = by["likelihood"]["models"]["base"], by["generate"]["models"]["base"]
            rows.append((name, by["generate"]["n"], percent(generated["accuracy"], generated["ci"]["accuracy"]),
                         percent(generated["accuracy_lenient"], generated["ci"]["accuracy_lenient"]),
                         percent(generated["unparseable"], generated["ci"]["unparseable"]),
                         percent(likelihood["accuracy"], likelihood["ci"]["accuracy"]), f"{seconds:.0f} s"))
    header = ("benchmark", "items", "strict %", "lenient %", "unparseable %", "likelihood %", "wall (both)")
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
