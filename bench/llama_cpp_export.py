"""An exported run in llama.cpp itself, beside the run: what `medsft export`'s check measures through transformers'
reader, measured again in the program clinicians run (llama-cpp-python, which builds llama.cpp; not a medsft
dependency: `pip install llama-cpp-python`).

    python bench/llama_cpp_export.py OUT.gguf [--items 200]

The run is the one the file's `medsft.run` names. Prints: on the run's first 16 test texts rendered as training
renders them, how many llama.cpp tokenizes into the run's tokens; the largest next-token log-probability
difference and the share of positions whose most likely token agrees; then the run's first N test items of each
choice task, each choice's log-likelihood summed in llama.cpp over the tokens training scores it on (choice_spans),
llama.cpp's answers against the run's, with the exact McNemar test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402
from gguf import GGUFReader  # noqa: E402

from medsft.data.datasets import load  # noqa: E402
from medsft.data.encoding import Encoder  # noqa: E402
from medsft.evaluation import export_check, stats  # noqa: E402
from medsft.evaluation.scoring import choice_spans, score_choices  # noqa: E402
from medsft.models import inference  # noqa: E402
from medsft.recipe import mixture  # noqa: E402
from medsft.runs import records, run_folder  # noqa: E402


def log_probs(llm, ids: list[int]) -> torch.Tensor:
    """llama.cpp's log-probabilities of every next token after each prefix of `ids`."""
    llm.reset()
    llm.eval(ids)
    return torch.log_softmax(torch.tensor(np.array(llm.scores[: len(ids)])), -1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()
    field = GGUFReader(args.file).fields["medsft.run"]
    run = Path(bytes(field.parts[field.data[0]]).decode())
    loaded = inference.load(str(run), False, dequantize=True, dtype="float32")
    model = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
    tokenizer, recipe = loaded.tokenizer, run_folder.parse_run(run, [])
    datasets = load(mixture.specs(recipe.script, recipe.training), records.read_ids(str(run)))
    llm = llama_cpp.Llama(str(args.file), logits_all=True, n_ctx=loaded.max_length or 4096, verbose=False)

    rendered = export_check.rendered(tokenizer, datasets[0], 16)
    same = sum(tokenizer(t, add_special_tokens=s)["input_ids"] == llm.tokenize(t.encode(), add_bos=s, special=True)
               for t, s in rendered)
    print(f"tokens: llama.cpp gives the run's tokens on {same} of {len(rendered)} rendered test texts")
    largest, agree, positions = 0.0, 0, 0
    for ids in export_check.texts(tokenizer, datasets[0], 16, loaded.max_length):
        theirs = log_probs(llm, ids)[:-1]
        with torch.no_grad():
            mine = model(torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
        target = torch.tensor(ids[1:])[:, None]
        largest = max(largest, (mine.gather(-1, target) - theirs.gather(-1, target)).abs().max().item())
        agree, positions = agree + int((mine.argmax(-1) == theirs.argmax(-1)).sum()), positions + len(ids) - 1
    print(f"next tokens: largest log-probability difference {largest:.3g} over {positions} positions, most likely "
          f"token the same at {agree / positions * 100:.1f}%")
    encoder = Encoder(tokenizer, loaded.max_length)
    for dataset in datasets:
        task, rows = dataset.task, dataset.parts["test"][: args.items]
        if not (task.choices and rows):
            continue
        run_scored = score_choices(model, tokenizer, task, rows, loaded.max_length)
        answers = []
        for row in rows:
            sums = []
            for s in choice_spans(encoder, task, row):
                lp = log_probs(llm, s.ids[: s.stop])
                sums.append(sum(lp[t - 1, s.ids[t]].item() for t in range(max(s.start, 1), s.stop)))
            answers.append(task.row_labels(row)[int(np.argmax(sums))])
        gold, run_pred = [p["gold"] for p in run_scored], [p["prediction"] for p in run_scored]
        test = stats.paired(gold, run_pred, answers, task.labels(), recipe.training.seed)
        print(f"{dataset.spec.name}: {len(rows)} test items, run {np.mean([g == p for g, p in zip(gold, run_pred)]) * 100:.1f}%, "
              f"llama.cpp {np.mean([g == p for g, p in zip(gold, answers)]) * 100:.1f}%, same answer on "
              f"{np.mean([a == b for a, b in zip(run_pred, answers)]) * 100:.1f}% (McNemar p {test['p_value']:.2g})")


if __name__ == "__main__":
    main()
