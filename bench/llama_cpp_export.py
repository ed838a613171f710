"""An exported run in llama.cpp itself, beside the run: what `medsft export`'s check measures through transformers'
reader, measured again in the program clinicians run (llama-cpp-python, which builds llama.cpp; not a medsft
dependency: `pip install llama-cpp-python`).

    python bench/llama_cpp_export.py OUT.gguf [--items 200] [--n_ctx N]

The run is the one the file's `medsft.run` names. Prints: on the run's first 16 test texts rendered as training
renders them, how many llama.cpp tokenizes into the run's tokens; the largest next-token log-probability
difference and the share of positions whose most likely token agrees (read_back's own measures, with llama.cpp
in the file's place); then the run's first N test items of each choice task, each choice's log-likelihood summed
in llama.cpp over the tokens training scores it on (choice_spans), llama.cpp's answers against the run's, with the
exact McNemar test. tests/test_export_llama_cpp.py uses `load` and `check`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402
from gguf import GGUFReader  # noqa: E402

from medsft.data.datasets import load as load_datasets  # noqa: E402
from medsft.data.encoding import Encoder  # noqa: E402
from medsft.evaluation import stats  # noqa: E402
from medsft.export import read_back  # noqa: E402
from medsft.evaluation.scoring import choice_spans, score_choices  # noqa: E402
from medsft.models import inference  # noqa: E402
from medsft.recipe import mixture  # noqa: E402
from medsft.runs import records, run_folder  # noqa: E402


def log_probs(llm, ids: list[int]) -> torch.Tensor:
    """llama.cpp's log-probabilities of every next token after each prefix of `ids`."""
    llm.reset()
    llm.eval(ids)
    return torch.log_softmax(torch.tensor(np.array(llm.scores[: len(ids)])), -1)


class AsModel:
    """llama.cpp's logits in a transformers model's call shape (one row), for read_back.next_tokens."""

    device = torch.device("cpu")  # llama.cpp reads token ids from the host

    def __init__(self, llm):
        self.llm = llm

    def __call__(self, x: torch.Tensor):
        return SimpleNamespace(logits=log_probs(self.llm, x[0].tolist())[None])


class AsTokenizer:
    """llama.cpp's tokenizer (special tokens parsed, as its server does) in a transformers tokenizer's call shape,
    for read_back.same_tokens."""

    def __init__(self, llm):
        self.llm = llm

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": self.llm.tokenize(text.encode(), add_bos=add_special_tokens, special=True)}


@dataclass
class Loaded:
    model: object  # the run's model, its adapter folded in
    tokenizer: object
    max_length: int | None
    recipe: object
    datasets: list
    llm: object


def load(file: Path, n_ctx: int | None = None) -> Loaded:
    """The run the file names (its model, tokenizer and datasets) and the file in llama.cpp (context `n_ctx`, else
    the run's max_length)."""
    field = GGUFReader(file).fields["medsft.run"]
    run = Path(bytes(field.parts[field.data[0]]).decode())
    loaded = inference.load(str(run), False, dequantize=True, dtype="float32")
    model = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
    recipe = run_folder.parse_run(run, [])
    datasets = load_datasets(mixture.specs(recipe.script, recipe.training), records.read_ids(str(run)))
    llm = llama_cpp.Llama(str(file), logits_all=True, n_ctx=n_ctx or loaded.max_length or 4096, verbose=False)
    return Loaded(model, loaded.tokenizer, loaded.max_length, recipe, datasets, llm)


def check(loaded: Loaded, n: int) -> dict:
    """read_back's tokens and next tokens on the first n test texts, llama.cpp in the file's place; and the end of
    generation llama.cpp takes from the file."""
    first, llm = loaded.datasets[0], loaded.llm
    rendered = read_back.rendered(loaded.tokenizer, first, n)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eot = llama_cpp.llama_vocab_eot(vocab)
    return {"tokens": read_back.same_tokens(loaded.tokenizer, AsTokenizer(llm), rendered),
            "next_tokens": read_back.next_tokens(loaded.model, AsModel(llm),
                                                    read_back.texts(loaded.tokenizer, first, n, loaded.max_length)),
            "eot": eot, "eot_ends_generation": bool(llama_cpp.llama_vocab_is_eog(vocab, eot))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--n_ctx", type=int, default=None)
    args = parser.parse_args()
    loaded = load(args.file, args.n_ctx)
    found = check(loaded, 16)
    t, n = found["tokens"], found["next_tokens"]
    print(f"tokens: llama.cpp gives the run's tokens on {round(t['same'] * t['texts'])} of {t['texts']} rendered test texts")
    print(f"next tokens: largest log-probability difference {n['max_logprob_difference']:.3g} over {n['positions']} "
          f"positions, most likely token the same at {n['top1_agreement'] * 100:.1f}%")
    encoder = Encoder(loaded.tokenizer, loaded.max_length)
    for dataset in loaded.datasets:
        task, rows = dataset.task, dataset.parts["test"][: args.items]
        if not (task.choices and rows):
            continue
        run_scored = score_choices(loaded.model, loaded.tokenizer, task, rows, loaded.max_length)
        answers = []
        for row in rows:
            sums = []
            for s in choice_spans(encoder, task, row):
                lp = log_probs(loaded.llm, s.ids[: s.stop])
                sums.append(sum(lp[t - 1, s.ids[t]].item() for t in range(max(s.start, 1), s.stop)))
            answers.append(task.row_labels(row)[int(np.argmax(sums))])
        gold, run_pred = [p["gold"] for p in run_scored], [p["prediction"] for p in run_scored]
        test = stats.paired(gold, run_pred, answers, task.labels(), loaded.recipe.training.seed)
        print(f"{dataset.spec.name}: {len(rows)} test items, run {np.mean([g == p for g, p in zip(gold, run_pred)]) * 100:.1f}%, "
              f"llama.cpp {np.mean([g == p for g, p in zip(gold, answers)]) * 100:.1f}%, same answer on "
              f"{np.mean([a == b for a, b in zip(run_pred, answers)]) * 100:.1f}% (McNemar p {test['p_value']:.2g})")


if __name__ == "__main__":
    main()
