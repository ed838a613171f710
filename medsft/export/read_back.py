"""An exported GGUF file read back through transformers' GGUF loader and compared with the run it came from, before
it ships: whether the file's tokenizer gives the run's tokens on the run's test texts rendered as training renders
them; the log-probability of each next token on them (the largest difference, and how often the most likely token
agrees); and for a choice task the run's own test items scored by both, with the paired test. The read-back model is
put where the run's model is (a GPU, where it was loaded there), and each model is given its inputs on its own
device. The numbers go in a JSON beside the file; the verdict weighs agreement and the paired test together."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import torch

from medsft.data.encoding import Encoder
from medsft.data.spans import rendering
from medsft.evaluation import stats
from medsft.evaluation.scoring import score_choices
from medsft.evaluation.sharing import Track, no_track
from medsft.export.gguf_vocab import SPACE
from medsft.export.gguf_writer import gemma2_query_scalar


def read_back(path: Path, device=None):
    """(model, tokenizer) of the GGUF file as transformers loads them (the model dequantized to float32, on `device`),
    with what llama.cpp reads from the file where transformers' reader falls back to a default instead: the head size
    from the key length (Qwen3's reader assumes 128), GPT-2's context and feed-forward sizes, Gemma-2's query scaling
    by the model's depth, each rotary frequency divided by the file's rope_freqs (Llama 3's scaling), Phi-3's long and
    short factors with their attention factor, and a SentencePiece vocabulary's spaces."""
    from gguf import GGUFReader
    from transformers import AutoConfig, AutoModelForCausalLM

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
        config.query_pre_attn_scalar = gemma2_query_scalar(config.num_hidden_layers, config.hidden_size,
                                                           config.num_attention_heads, config.head_dim)
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
    if device is not None:
        model.to(device)
    divisors = tensors.get("rope_freqs.weight")
    if divisors is not None:
        rotary = model.get_decoder().rotary_emb
        dims = 2 * len(divisors)
        plain = 1.0 / float(number("rope.freq_base")) ** (torch.arange(0, dims, 2, dtype=torch.float64) / dims)
        inv_freq = (plain / torch.from_numpy(divisors.astype("float64"))).float().to(rotary.inv_freq.device)
        rotary.inv_freq = rotary.original_inv_freq = inv_freq
    return model, read_tokenizer(path, reader)


def read_tokenizer(path: Path, reader=None):
    """The GGUF file's tokenizer as llama.cpp splits text with it (no weights read)."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    reader = reader if reader is not None else GGUFReader(path)
    return _as_llama_cpp_splits(AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name), reader)


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


def _per_position(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each next token's log-probability and the most likely token at each position, computed on the model's device
    so that only two numbers a position come back (not the vocabulary's log-probabilities: GBs at 128k-256k)."""
    x = x.to(model.device)
    logprobs = model(x).logits[0, :-1].float().log_softmax(-1)
    return logprobs.gather(-1, x[0, 1:, None]).squeeze(-1).cpu(), logprobs.argmax(-1).cpu()


@torch.no_grad()
def next_tokens(run_model, exported, token_lists: list[list[int]], track: Track = no_track) -> dict[str, Any]:
    """Largest |difference| of each next token's log-probability, and the share of positions whose most likely
    token is the same, over every position of every text (each model given the ids on its own device)."""
    largest, agree, positions = 0.0, 0, 0
    for ids in track(token_lists, len(token_lists)):
        x = torch.tensor([ids])
        (a, a_top), (b, b_top) = (_per_position(m, x) for m in (run_model, exported))
        largest = max(largest, (a - b).abs().max().item())
        agree += int((a_top == b_top).sum())
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
            max_length: int | None, items: int, seed: int, track_for=None) -> dict:
    """The whole check: `exported` is read_back's (model, tokenizer); `texts_rendered`: the first dataset's first
    test texts (rendered()). The file's tokens of those texts, the next tokens on them, then each choice task's test
    items (at most `items`) scored by both, tested pairwise. `track_for(name, unit)`: progress of each part."""
    track_for = track_for or (lambda name, unit="batches": no_track)
    exported, file_tokenizer = exported
    token_lists = texts(tokenizer, datasets[0], 16, max_length)
    found: dict[str, Any] = {"tokens": same_tokens(tokenizer, file_tokenizer, texts_rendered),
                             "next_tokens": next_tokens(run_model, exported, token_lists, track_for("next tokens", "texts"))}
    for dataset in datasets:
        task, rows = dataset.task, dataset.parts["test"][:items]
        if not (task.choices and rows):
            continue
        run_scored, file_scored = (score_choices(m, tokenizer, task, rows, max_length, track=track_for(f"{name} {dataset.spec.name}"))
                                   for m, name in ((run_model, "run"), (exported, "file")))
        gold = [p["gold"] for p in run_scored]
        run_pred, file_pred = [p["prediction"] for p in run_scored], [p["prediction"] for p in file_scored]
        found.setdefault("items", {})[dataset.spec.name] = {
            "n": len(rows), "run_accuracy": sum(g == p for g, p in zip(gold, run_pred)) / len(rows),
            "exported_accuracy": sum(g == p for g, p in zip(gold, file_pred)) / len(rows),
            "same_answer": sum(a == b for a, b in zip(run_pred, file_pred)) / len(rows),
            "test": stats.paired(gold, run_pred, file_pred, task.labels(), seed)}
    return found


AGREEMENT = {"f16": 0.99, "bf16": 0.95, "q8_0": 0.95}  # f16 rounds only; bf16 and q8_0 move near-ties
LEVEL = 0.05  # the paired test's significance level


def verdict(found: dict, kind: str) -> tuple[bool | None, str]:
    """(whether the file gives the run's answers, the reason in words; None: not checked). The file's tokenizer must
    give the run's tokens on every text; then, for the items scored, their answers must agree on at least
    AGREEMENT[kind] of them and the paired test find no difference in accuracy (McNemar p >= 0.05): rounding moves a
    near-tie's answer either way, which one item at a time does not make the file worse; without items, the most
    likely next token the same at AGREEMENT[kind] of positions."""
    tokens = found["tokens"]
    if tokens["same"] < 1.0:
        return False, f"its tokenizer gives other tokens on {(1 - tokens['same']) * 100:.1f}% of the run's texts"
    needed = AGREEMENT[kind]
    if found.get("items"):
        for name, v in found["items"].items():
            if v["same_answer"] < needed:
                return False, (f"{name}: answers agree on {v['same_answer'] * 100:.1f}% of {v['n']} items, under the "
                               f"{needed * 100:.0f}% expected at {kind}")
            if v["test"]["p_value"] < LEVEL:
                return False, (f"{name}: accuracy {v['run_accuracy'] * 100:.1f}% -> {v['exported_accuracy'] * 100:.1f}%, "
                               f"McNemar p {v['test']['p_value']:.2g} < {LEVEL}")
        return True, "answers agree on " + ", ".join(f"{v['same_answer'] * 100:.1f}% of {v['n']} {name} items (McNemar p "
                                                     f"{v['test']['p_value']:.2g})" for name, v in found["items"].items())
    if "next_tokens" not in found:
        return None, "--check 0 compared its tokenizer alone"
    top1 = found["next_tokens"]["top1_agreement"]
    if top1 < needed:
        return False, f"the most likely next token agrees at {top1 * 100:.1f}% of positions, under {needed * 100:.0f}%"
    return True, f"the most likely next token agrees at {top1 * 100:.1f}% of positions"
