"""An exported GGUF file read back through transformers' GGUF loader and compared with the run it came from, before
it ships: the log-probability of each next token on the run's test texts rendered as training renders them (the
largest difference, and how often the most likely token agrees), and for a choice task the run's own test items
scored by both, with the paired test. The numbers go in a JSON beside the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medsft.data.encoding import Encoder
from medsft.evaluation import stats
from medsft.evaluation.scoring import score_choices


def read_back(path: Path):
    """The GGUF file as transformers loads it (dequantized to float32), with what llama.cpp reads from the file where
    transformers' reader falls back to a default instead: the head size from the key length (Qwen3's reader assumes
    128), and Gemma-2's query scaling, 1/sqrt(key length)."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    key_length = reader.fields.get(f"{arch}.attention.key_length")
    if key_length is not None:
        config.head_dim = int(key_length.parts[-1][0])
    if config.model_type == "gemma2":
        config.query_pre_attn_scalar = config.head_dim
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config, dtype=torch.float32).eval()


@torch.no_grad()
def next_tokens(run_model, exported, token_lists: list[list[int]]) -> dict[str, Any]:
    """Largest |difference| of each next token's log-probability, and the share of positions whose most likely
    token is the same, over every position of every text."""
    largest, agree, positions = 0.0, 0, 0
    for ids in token_lists:
        x = torch.tensor([ids])
        a, b = (m(x).logits[0, :-1].float().log_softmax(-1) for m in (run_model, exported))
        target = x[0, 1:, None]
        largest = max(largest, (a.gather(-1, target) - b.gather(-1, target)).abs().max().item())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        positions += a.shape[0]
    return {"texts": len(token_lists), "positions": positions, "max_logprob_difference": largest,
            "top1_agreement": agree / max(positions, 1)}


def texts(tokenizer, dataset, n: int, max_length: int | None) -> list[list[int]]:
    """The first n test items' token ids as training renders them (prompt and answer, through the end of turn)."""
    encoder, out = Encoder(tokenizer, max_length), []
    for row in dataset.parts["test"]:
        example = dataset.task.example(row)
        span = encoder.span(example)[0] if example is not None else None
        if span is not None:
            out.append(span.ids[: span.end])
        if len(out) == n:
            break
    return out


def compare(run_model, exported, tokenizer, datasets: list, max_length: int | None, items: int, seed: int) -> dict:
    """The whole check: next tokens on the first dataset's test texts, then each choice task's test items (at most
    `items`, 0: none) scored by both, tested pairwise."""
    first = datasets[0]
    found: dict[str, Any] = {"next_tokens": next_tokens(run_model, exported, texts(tokenizer, first, 16, max_length))}
    for dataset in datasets:
        task, rows = dataset.task, dataset.parts["test"][:items]
        if not (task.choices and rows):
            continue
        run_scored, file_scored = (score_choices(m, tokenizer, task, rows, max_length) for m in (run_model, exported))
        gold = [p["gold"] for p in run_scored]
        run_pred, file_pred = [p["prediction"] for p in run_scored], [p["prediction"] for p in file_scored]
        found.setdefault("items", {})[dataset.spec.name] = {
            "n": len(rows), "run_accuracy": sum(g == p for g, p in zip(gold, run_pred)) / len(rows),
            "exported_accuracy": sum(g == p for g, p in zip(gold, file_pred)) / len(rows),
            "same_answer": sum(a == b for a, b in zip(run_pred, file_pred)) / len(rows),
            "test": stats.paired(gold, run_pred, file_pred, task.labels(), seed)}
    return found


def same_answers(found: dict, kind: str) -> bool:
    """The summary's verdict: every checked test item answered alike; without items, the most likely token the same
    at 99% of positions (95% for q8_0, whose rounding moves near-ties)."""
    if found.get("items"):
        return all(v["same_answer"] == 1.0 for v in found["items"].values())
    return found["next_tokens"]["top1_agreement"] >= (0.95 if kind == "q8_0" else 0.99)
