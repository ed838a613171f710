"""medsft's choice scoring against lm-evaluation-harness on the same model and items, side by side.

    pip install -e ".[bench]"
    python bench/eval_speed.py [--benchmark medqa|pubmedqa] [--limit N] [--batch 8] [--lm-eval-cache FILE]
    python bench/eval_speed.py --benchmark medqa --compare OUTPUT_DIR/predictions.jsonl   # a `medsft eval` vs lm-eval
    python bench/eval_speed.py --processes 2 [--limit N]    # `medsft eval` in 1 and in 2 processes, side by side

medqa: MedQA-USMLE's 1273 test items (`../shared/data/mcq/medqa.jsonl`), lm-eval's `medqa_4options` prompt.
pubmedqa: PubMedQA's official 500 test items, lm-eval's `pubmedqa` prompt.
Both sides score the same items with lm-eval's prompt: medsft through its own data layer and task (`prompt_style:
lm_eval`), in fp32 and with bf16 autocast; lm-eval through its `hf` model with a local task YAML whose
`dataset_path: json` points at a JSONL of the same items (nothing is downloaded). Prints accuracy, macro-F1, per-item
agreement with lm-eval and the wall-time ratio. `--compare` instead compares the base-model predictions of a
`python -m medsft eval` run (the CLI, its recipe's settings) with lm-eval's, item by item. `--lm-eval-cache` keeps
lm-eval's predictions in a file and reuses them (its run takes ~18 minutes for MedQA on 2 cores). `--processes N`
runs `medsft eval` of the embedded model on PubMedQA's official test items (base model, the recipe's prompt) under
`accelerate launch` with 1 and with N processes, the machine's cores shared out among them, and prints both wall
times and whether the two eval_results.json agree.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import DATA as SHARED, device  # noqa: E402
from medsft.runs import records  # noqa: E402

from medsft.data import datasets as data
from medsft.evaluation import metrics, scoring
from medsft.models import locate
from medsft.models.tokenizer import load_tokenizer
from medsft.recipe.keys import DataSpec

BENCHMARKS = {
    "medqa": {
        "spec": DataSpec(task="medqa", data_files={"test": str(SHARED / "mcq" / "medqa.jsonl")}, prompt_style="lm_eval"),
        "item": lambda r: {"id": r["id"], "question": r["question"], "options": r["options"], "answer": r["answer"]},
        "choices": ["A", "B", "C", "D"],
        "target": 'doc["answer"]',
        # lm-eval's medqa_4options doc_to_text (preprocess_medqa.py), over this file's field names
        "text": 'answers = "".join(f"{k}. {v}\\n" for k, v in doc["options"].items())\n'
                '    return f"Question: {doc[\'question\']}\\n{answers}Answer:"',
    },
    "pubmedqa": {
        "spec": DataSpec(task="pubmedqa", dataset_name=str(SHARED / "pubmedqa" / "ori_pqal.json"), prompt_style="lm_eval"),
        "item": lambda r: {"id": r["id"], "QUESTION": r["question"], "CONTEXTS": r["contexts"], "answer": r["final_decision"]},
        "choices": ["yes", "no", "maybe"],
        "target": 'doc["answer"]',
        # lm-eval's pubmedqa doc_to_text
        "text": 'return "Abstract: " + "\\n".join(doc["CONTEXTS"]) + "\\nQuestion: " + doc["QUESTION"] + "\\nAnswer:"',
    },
}

TASK_YAML = """\
task: medsft_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: !function prompt.doc_to_text
doc_to_target: !function prompt.doc_to_target
doc_to_choice: {choices}
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

PROMPT_PY = """\
CHOICES = {choices}


def doc_to_text(doc):
    {text}


def doc_to_target(doc):
    return CHOICES.index({target})
"""


def run_lm_eval(model_path: str, bench: dict, rows: list[dict], batch: int, workdir: Path) -> tuple[list[str], float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    items = workdir / "items.jsonl"
    items.write_text("".join(json.dumps(bench["item"](r)) + "\n" for r in rows))
    (workdir / "medsft_local.yaml").write_text(TASK_YAML.format(data=items, choices=json.dumps(bench["choices"])))
    (workdir / "prompt.py").write_text(PROMPT_PY.format(choices=bench["choices"], text=bench["text"], target=bench["target"]))
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_path},dtype=float32", tasks=["medsft_local"],
        task_manager=TaskManager(include_path=str(workdir)), batch_size=batch, device=str(device()), log_samples=True,
    )
    seconds = time.perf_counter() - start
    samples = sorted(out["samples"]["medsft_local"], key=lambda s: s["doc_id"])
    choices = bench["choices"]
    return [choices[max(range(len(choices)), key=lambda j: s["filtered_resps"][j][0])] for s in samples], seconds


def run_medsft(model, tokenizer, dataset, batch: int, bf16: bool) -> tuple[list[str], float]:
    start = time.perf_counter()
    with torch.autocast(device().type, dtype=torch.bfloat16, enabled=bf16):
        results = scoring.score_choices(model, tokenizer, dataset.task, dataset.parts["test"], None, batch)
    return [r["prediction"] for r in results], time.perf_counter() - start


def compare_processes(n: int, limit: int | None) -> None:
    import os
    import subprocess

    recipe, pubmedqa = ROOT / "recipes" / "pubmedqa_lora.yaml", SHARED / "pubmedqa" / "ori_pqal.json"
    if not pubmedqa.is_file():
        sys.exit(f"needs the PubMedQA data at {pubmedqa}")
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for procs in (1, n):
            out = Path(tmp) / f"p{procs}"
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(procs),
                   "--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // procs)),
                   "--config_file", str(ROOT / "accelerate_configs" / ("single_process.yaml" if procs == 1 else "multi_process.yaml")),
                   "-m", "medsft", "eval", str(recipe), "--dataset_name", str(pubmedqa), "--output_dir", str(out),
                   "--calibrate", "false", "--sample_count", "0", *(["--max_test_samples", str(limit)] if limit else [])]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            seconds[procs] = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"{procs} process(es) failed: {proc.stderr.strip().splitlines()[-1:]}")
            results[procs] = json.loads((out / records.EVAL_RESULTS).read_text())
    [one], [many] = results[1]["evaluations"], results[n]["evaluations"]
    print(f"\nmedsft eval, embedded model, PubMedQA test ({one['n']} items), wall time including start-up")
    for procs, r in ((1, one), (n, many)):
        print(f"{procs} process(es): {seconds[procs]:7.1f} s  accuracy {r['models']['base']['accuracy'] * 100:.1f}  "
              f"items per process {results[procs]['run']['scored_per_process']}")
    print(f"speed-up {seconds[1] / seconds[n]:.2f}x; same results: {one == many}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="medqa")
    parser.add_argument("--limit", type=int, default=None, help="stratified subset of the test items")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compare", type=Path, default=None,
                        help="predictions.jsonl of `python -m medsft eval ... --prompt_style lm_eval`: its base predictions "
                             "of this benchmark are compared with lm-eval's item by item")
    parser.add_argument("--lm-eval-cache", type=Path, default=None, help="lm-eval's predictions: read if present, else written")
    parser.add_argument("--processes", type=int, default=None, help="compare `medsft eval` in 1 and in N processes")
    args = parser.parse_args()
    if args.processes:
        return compare_processes(args.processes, args.limit)
    bench = BENCHMARKS[args.benchmark]
    spec = bench["spec"]
    spec.name, spec.max_test_samples = args.benchmark, args.limit
    try:
        dataset = data.load([spec])[0]
    except Exception as e:
        sys.exit(f"needs the data in {SHARED}: {e}")
    from transformers import AutoModelForCausalLM

    rows = dataset.parts["test"]
    gold = [dataset.task.gold(r) for r in rows]
    labels = dataset.task.labels()
    path = locate.resolve("smollm2-135m-instruct")
    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").to(device()).eval()

    cache = args.lm_eval_cache
    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        lm_preds, lm_seconds = [saved["predictions"][r["id"]] for r in rows], saved["seconds"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            lm_preds, lm_seconds = run_lm_eval(path, bench, rows, args.batch, Path(tmp))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"seconds": lm_seconds, "predictions": {r["id"]: p for r, p in zip(rows, lm_preds)}}))
    ours = {} if args.compare else {"medsft fp32": run_medsft(model, tokenizer, dataset, args.batch, False),
                                    "medsft bf16": run_medsft(model, tokenizer, dataset, args.batch, True)}

    print(f"\n{len(rows)} {args.benchmark} test items, SmolLM2-135M-Instruct, lm-eval prompt, threads {torch.get_num_threads()}")
    print(f"{'':14s} {'accuracy':>9s} {'macro-F1':>9s} {'agree w/ lm-eval':>17s} {'seconds':>8s} {'speed-up':>9s}")
    m = metrics.classification_metrics(gold, lm_preds, labels)
    print(f"{'lm-eval':14s} {m['accuracy'] * 100:9.1f} {m['macro_f1'] * 100:9.1f} {'':>17s} {lm_seconds:8.1f} {1.0:9.2f}")
    for name, (preds, seconds) in ours.items():
        m = metrics.classification_metrics(gold, preds, labels)
        agree = sum(a == b for a, b in zip(preds, lm_preds)) / len(rows)
        print(f"{name:14s} {m['accuracy'] * 100:9.1f} {m['macro_f1'] * 100:9.1f} {agree:17.1%} {seconds:8.1f} {lm_seconds / seconds:9.2f}")
    if args.compare:
        by_id = {p["id"]: p["base_prediction"] for p in map(json.loads, args.compare.read_text().splitlines())
                 if p.get("dataset", args.benchmark) == args.benchmark}
        missing = [r["id"] for r in rows if r["id"] not in by_id]
        if missing:
            sys.exit(f"{args.compare} lacks {len(missing)} of these items (first: {missing[0]})")
        preds = [by_id[r["id"]] for r in rows]
        m = metrics.classification_metrics(gold, preds, labels)
        agree = sum(a == b for a, b in zip(preds, lm_preds)) / len(rows)
        print(f"{'medsft eval':14s} {m['accuracy'] * 100:9.1f} {m['macro_f1'] * 100:9.1f} {agree:17.1%}   ({args.compare})")


if __name__ == "__main__":
    main()
