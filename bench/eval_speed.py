"""medsft's PubMedQA evaluation against lm-evaluation-harness on the same model and items, side by side.

    pip install -e ".[bench]"
    python bench/eval_speed.py [--limit N] [--batch 8] [--compare OUTPUT_DIR/predictions.jsonl]

Both score the official test split (all 500 items, or a stratified `--limit`) with lm-eval's pubmedqa prompt:
medsft with `prompt_style: lm_eval` (fp32, and bf16 autocast), lm-eval through its `hf` model with a local task
YAML whose `dataset_path: json` points at a JSONL of the same items (nothing is downloaded). Prints accuracy,
macro-F1, per-item agreement with lm-eval and the wall-time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medsft import data, evaluate, metrics, models  # noqa: E402
from medsft.config import MedsftArguments  # noqa: E402
from medsft.tasks.pubmedqa import CHOICES  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"

TASK_YAML = """\
task: pubmedqa_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: !function prompt.doc_to_text
doc_to_target: final_decision
doc_to_choice: ["yes", "no", "maybe"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

# lm-eval's pubmedqa doc_to_text, restated: "Abstract: " + contexts joined by newlines + question + "Answer:".
PROMPT_PY = textwrap.dedent('''\
    def doc_to_text(doc):
        return "Abstract: " + "\\n".join(doc["CONTEXTS"]) + "\\nQuestion: " + doc["QUESTION"] + "\\nAnswer:"
''')


def test_rows(limit: int | None) -> list[dict]:
    args = MedsftArguments(dataset_name=str(DATA), prompt_style="lm_eval", max_test_samples=limit)
    return data.split(data.load_rows(args, seed=0), args, seed=0)["test"]


def run_lm_eval(model_path: str, rows: list[dict], batch: int, workdir: Path) -> tuple[list[str], float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    items = workdir / "pubmedqa_test.jsonl"
    items.write_text("".join(json.dumps({"id": r["id"], "QUESTION": r["question"], "CONTEXTS": r["contexts"],
                                         "final_decision": r["final_decision"]}) + "\n" for r in rows))
    (workdir / "pubmedqa_local.yaml").write_text(TASK_YAML.format(data=items))
    (workdir / "prompt.py").write_text(PROMPT_PY)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_path},dtype=float32", tasks=["pubmedqa_local"],
        task_manager=TaskManager(include_path=str(workdir)), batch_size=batch, device="cpu", log_samples=True,
    )
    seconds = time.perf_counter() - start
    samples = sorted(out["samples"]["pubmedqa_local"], key=lambda s: s["doc_id"])
    predictions = [CHOICES[max(range(3), key=lambda j: s["filtered_resps"][j][0])] for s in samples]
    return predictions, seconds


def run_medsft(model, tokenizer, rows: list[dict], batch: int, bf16: bool) -> tuple[list[str], float]:
    args = MedsftArguments(prompt_style="lm_eval")
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        results = evaluate.score_pubmedqa(model, tokenizer, rows, args, max_length=None, batch_size=batch)
    return [r["prediction"] for r in results], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="stratified subset of the 500 test items")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--compare", type=Path, default=None,
                        help="predictions.jsonl of `python -m medsft eval ... --prompt_style lm_eval`: its base predictions "
                             "are compared with lm-eval's item by item")
    args = parser.parse_args()
    if not DATA.is_file():
        sys.exit(f"needs the PubMedQA data at {DATA}")
    from transformers import AutoModelForCausalLM

    rows = test_rows(args.limit)
    gold = [r["final_decision"] for r in rows]
    path = models.resolve("smollm2-135m-instruct")
    tokenizer = models.load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()

    with tempfile.TemporaryDirectory() as tmp:
        lm_preds, lm_seconds = run_lm_eval(path, rows, args.batch, Path(tmp))
    ours = {"medsft fp32": run_medsft(model, tokenizer, rows, args.batch, False),
            "medsft bf16": run_medsft(model, tokenizer, rows, args.batch, True)}

    print(f"\n{len(rows)} PubMedQA test items, SmolLM2-135M-Instruct, lm-eval prompt, threads {torch.get_num_threads()}")
    print(f"{'':14s} {'accuracy':>9s} {'macro-F1':>9s} {'agree w/ lm-eval':>17s} {'seconds':>8s} {'speed-up':>9s}")
    m = metrics.classification_metrics(gold, lm_preds)
    print(f"{'lm-eval':14s} {m['accuracy'] * 100:9.1f} {m['macro_f1'] * 100:9.1f} {'':>17s} {lm_seconds:8.1f} {1.0:9.2f}")
    for name, (preds, seconds) in ours.items():
        m = metrics.classification_metrics(gold, preds)
        agree = sum(a == b for a, b in zip(preds, lm_preds)) / len(rows)
        print(f"{name:14s} {m['accuracy'] * 100:9.1f} {m['macro_f1'] * 100:9.1f} {agree:17.1%} {seconds:8.1f} {lm_seconds / seconds:9.2f}")
    if args.compare:
        by_id = {p["id"]: p["base_prediction"] for p in map(json.loads, args.compare.read_text().splitlines())}
        missing = [r["id"] for r in rows if r["id"] not in by_id]
        if missing:
            sys.exit(f"{args.compare} lacks {len(missing)} of these items (first: {missing[0]})")
        preds = [by_id[r["id"]] for r in rows]
        m = metrics.classification_metrics(gold, preds)
        agree = sum(a == b for a, b in zip(preds, lm_preds)) / len(rows)
        print(f"{'medsft eval':14s} {m['accuracy'] * 100:9.1f} {m['macro_f1'] * 100:9.1f} {agree:17.1%}   ({args.compare})")


if __name__ == "__main__":
    main()
