"""An exported GGUF file read back through transformers' GGUF loader and compared with the run it came from, before
it ships: whether the file's tokenizer gives the run's tokens on the run's test texts rendered as training renders
them; the log-probability of each next token on them (the largest difference, and how often the most likely token
agrees); and for a choice task the run's own test items scored by both, with the paired test. The numbers go in a
JSON beside the file."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import torch

from medsft.data.encoding import Encoder
from medsft.data.spans import rendering
from medsft.models.gguf_vocab import SPACE
from medsft.evaluation import stats
from medsft.evaluation.scoring import score_choices


def read_back(path: Path):
    """(model, tokenizer) of the GGUF file as transformers loads them (the model dequantized to float32), with what
    llama.cpp reads from the file where transformers' reader falls back to a default instead: the head size from the
    key length (Qwen3's reader assumes 128), GPT-2's context and feed-forward sizes, Gemma-2's query scaling,
    1/sqrt(key length), each rotary frequency divided by the file's rope_freqs (Llama 3's scaling), Phi-3's long and
    short factors with their attention factor, and a SentencePiece vocabulary's spaces."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    reader = GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()

    def number(key):
        found = reader.fields.get(f"{arch}.{key}")
        return None if found is None else found.parts[-1][0].item()

    tensors = {t.name: t.data for t in reader.tensors if t.name.startswith("rope_")}
    if number("attention.key_length") is not None:
        config.head_dim = int(number("attention.key_length"))
    if config.model_type == "gemma2":
        config.query_pre_attn_scalar = config.head_dim
    if config.model_type == "gpt2":  # the reader names the context n_ctx and drops the feed-forward size
        config.n_positions, config.n_inner = int(number("context_length")), int(number("feed_forward_length"))
    if "rope_factors_short.weight" in tensors:  # Phi-3's long-context scaling, as llama.cpp applies it
        original = int(number("rope.scaling.original_context_length"))
        config.original_max_position_embeddings = original
        config.rope_parameters = {"rope_type": "longrope", "rope_theta": float(number("rope.freq_base")),
                                  "short_factor": tensors["rope_factors_short.weight"].tolist(),
                                  "long_factor": tensors["rope_factors_long.weight"].tolist(),
                                  "original_max_position_embeddings": original,
                                  "attention_factor": float(number("rope.scaling.attn_factor"))}
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config, dtype=torch.float32).eval()
    divisors = tensors.get("rope_freqs.weight")
    if divisors is not None:
        rotary = model.get_decoder().rotary_emb
        dims = 2 * len(divisors)
        plain = 1.0 / float(number("rope.freq_base")) ** (torch.arange(0, dims, 2, dtype=torch.float64) / dims)
        rotary.inv_freq = rotary.original_inv_freq = (plain / torch.from_numpy(divisors.astype("float64"))).float()
    return model, _as_llama_cpp_splits(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), reader)


def _as_llama_cpp_splits(tokenizer, reader):
    """A SentencePiece vocabulary (`llama`) spaced as llama.cpp spaces it: spaces as ▁, and a ▁ before the text and
    after every special token exactly when the file's add_space_prefix says so (transformers' reader picks its
    spacing by architecture instead, Phi-3's always prefixed)."""
    from tokenizers import normalizers

    field = reader.fields.get("tokenizer.ggml.model")
    if field is None or bytes(field.parts[-1]).decode() != "llama":
        return tokenizer
    prefix = reader.fields.get("tokenizer.ggml.add_space_prefix")
    steps = [normalizers.Prepend(SPACE)] if prefix is None or bool(prefix.parts[-1][0]) else []
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", SPACE)])
    tokenizer.backend_tokenizer.pre_tokenizer = None
    return tokenizer


def same_tokens(run_tokenizer, file_tokenizer, texts: list[tuple[str, bool]]) -> dict[str, Any]:
    """Whether the file's tokenizer gives the run's tokens for each rendered text (spans.rendering's: the text, and
    whether the tokenizer adds its BOS), and the first text where it does not."""
    def ids(tokenizer, text, special):
        return tokenizer(text, add_special_tokens=special)["input_ids"]

    differ = [(t, s) for t, s in texts if ids(run_tokenizer, t, s) != ids(file_tokenizer, t, s)]
    found = {"texts": len(texts), "same": (len(texts) - len(differ)) / max(len(texts), 1)}
    if differ:
        text, special = differ[0]
        found["first_different"] = {"text": text[:500], "run": ids(run_tokenizer, text, special)[:60],
                                    "file": ids(file_tokenizer, text, special)[:60]}
    return found


def rendered(tokenizer, dataset, n: int) -> list[tuple[str, bool]]:
    """The first n test items as training renders them (spans.rendering)."""
    examples = (dataset.task.example(row) for row in dataset.parts["test"])
    return [rendering(tokenizer, e) for e in islice((e for e in examples if e is not None), n)]


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


def compare(run_model, exported, tokenizer, datasets: list, texts_rendered: list[tuple[str, bool]],
            max_length: int | None, items: int, seed: int) -> dict:
    """The whole check: `exported` is read_back's (model, tokenizer); `texts_rendered`: the first dataset's first
    test texts (rendered()). The file's tokens of those texts, the next tokens on them, then each choice task's test
    items (at most `items`, 0: none) scored by both models, tested pairwise."""
    exported, file_tokenizer = exported
    found: dict[str, Any] = {"tokens": same_tokens(tokenizer, file_tokenizer, texts_rendered),
                             "next_tokens": next_tokens(run_model, exported, texts(tokenizer, datasets[0], 16, max_length))}
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
    """The summary's verdict: the file's tokenizer gives the run's tokens on every text, and every checked test item
    is answered alike; without items, the most likely token the same at 99% of positions (95% for bf16 and q8_0,
    whose rounding moves near-ties)."""
    if found["tokens"]["same"] < 1.0:
        return False
    if found.get("items"):
        return all(v["same_answer"] == 1.0 for v in found["items"].values())
    return found["next_tokens"]["top1_agreement"] >= (0.99 if kind == "f16" else 0.95)
