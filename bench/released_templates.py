"""Memorized items scored on the six released chat templates, as a user would try them: for each family (a tiny model
with the released template, verbatim, and a tokenizer of the family's own kind: tests/released.py), fully fine-tune
on 12 PubMedQA items until the model holds them, then score those same items by choice scoring; with `chat: true`
and with a plain prompt, each trained apart. A scorer that scores the tokens training trained gets them all.

    python bench/released_templates.py [--families phi3 qwen3] [--max-length 128]

Only medsft's public scoring API is called (encoding.Encoder, scoring.score_choices), so the same script measures
an older checkout: PYTHONPATH=OLD_CHECKOUT python bench/released_templates.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import released  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", nargs="*", default=list(released.FAMILIES))
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    if not released.available() or not released.PUBMEDQA.is_file():
        sys.exit(f"needs the shared templates and PubMedQA under {released.SHARED} (MEDSFT_DATA)")
    import medsft
    from transformers import AutoModelForCausalLM

    from medsft import tasks
    from medsft.evaluation import scoring
    from medsft.models.tokenizer import load_tokenizer
    from medsft.recipe.keys import DataSpec

    torch.set_num_threads(1)
    rows = released.pubmedqa_rows(12)
    print(f"medsft from {Path(medsft.__file__).parent}; 12 PubMedQA items (4 yes, 4 no, 4 maybe), max_length {args.max_length}")
    print("| family | template | tokenizer kind | chat: true | chat: false | steps (chat, plain) |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    for name in args.families:
        family = released.FAMILIES[name]
        path = released.build(family, Path(tempfile.mkdtemp()) / name, hidden=32)
        tokenizer = load_tokenizer(str(path))
        scored, steps, start = [], [], time.perf_counter()
        for chat in (True, False):
            task = tasks.get(DataSpec(task="pubmedqa", chat=chat))
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_pretrained(path)
            steps.append(released.memorize(model, tokenizer, [task.example(r) for r in rows], args.max_length)["steps"])
            predictions = scoring.score_choices(model, tokenizer, task, rows, args.max_length)
            scored.append(sum(p["prediction"] == p["gold"] for p in predictions) / len(rows))
        print(f"| {name} | {family.template} | {family.kind} | {100 * scored[0]:.1f}% | {100 * scored[1]:.1f}% | "
              f"{steps[0]}, {steps[1]} ({time.perf_counter() - start:.0f} s) |", flush=True)


if __name__ == "__main__":
    main()
