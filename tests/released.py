"""Tiny models carrying the six released chat templates verbatim (read from the shared data, never copied here) with a
tokenizer of each family's own kind, trained here, built through transformers' own tokenizer classes:

| family     | template file                     | tokenizer kind                                      | config       |
| ---------- | --------------------------------- | --------------------------------------------------- | ------------ |
| llama3.1   | llama-3.1-instruct.jinja          | byte-level BPE                                      | LlamaConfig  |
| qwen2.5    | qwen2.5-instruct.jinja            | byte-level BPE                                      | Qwen2Config  |
| qwen3      | qwen3.jinja                       | byte-level BPE, <think> </think>                    | Qwen3Config  |
| gemma2     | gemma-2-it.jinja                  | Gemma's SentencePiece (spaces as ▁, none prepended) | Gemma2Config |
| phi3       | phi-3-mini-4k-instruct.jinja      | SentencePiece, Llama-2 kind (▁ prepended, bytes)    | Phi3Config   |
| mistral    | mistral-7b-instruct-v0.3.jinja    | SentencePiece, Llama-2 kind                         | MistralConfig|

Each vocabulary holds an answer word with and without its space mark ("Ġyes"/"yes", "▁yes"/"yes"), as released
vocabularies do: which one a text takes depends on what precedes it. Special tokens, BOS/EOS/pad and
generation_config.eos_token_id are each family's, as the shared templates' README lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import zoo

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDSFT_DATA") or ROOT.parent / "shared" / "data")
TEMPLATES = SHARED / "templates"
PUBMEDQA = SHARED / "pubmedqa" / "ori_pqal.json"
ANSWERS = ("yes", "no", "maybe")


@dataclass
class Released:
    name: str
    template: str  # file under templates/
    kind: str  # byte, llama2 (SentencePiece, ▁ prepended), gemma (SentencePiece, nothing prepended)
    config: str
    bos: str | None
    eos: str
    pad: str | None
    end_of_turn: str
    stops: list[str]  # generation_config.eos_token_id
    special: list[str]  # the template's other special tokens
    added: list[str] = field(default_factory=list)  # added tokens that are not special (Qwen3's <think>)
    text_bos: bool = False  # the tokenizer puts BOS before plain text
    system: bool = True  # the template takes a system turn
    config_keys: dict = field(default_factory=dict)


FAMILIES = {
    "llama3.1": Released("llama3.1", "llama-3.1-instruct.jinja", "byte", "LlamaConfig", "<|begin_of_text|>", "<|eot_id|>", None,
                         "<|eot_id|>", ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
                         ["<|end_of_text|>", "<|eom_id|>", "<|python_tag|>", "<|start_header_id|>", "<|end_header_id|>"],
                         text_bos=True, config_keys={"rope_theta": 500000.0}),
    "qwen2.5": Released("qwen2.5", "qwen2.5-instruct.jinja", "byte", "Qwen2Config", None, "<|im_end|>", "<|endoftext|>",
                        "<|im_end|>", ["<|im_end|>", "<|endoftext|>"], ["<|im_start|>"], config_keys={"tie_word_embeddings": True}),
    "qwen3": Released("qwen3", "qwen3.jinja", "byte", "Qwen3Config", None, "<|im_end|>", "<|endoftext|>", "<|im_end|>",
                      ["<|im_end|>", "<|endoftext|>"], ["<|im_start|>"], added=["<think>", "</think>"],
                      config_keys={"tie_word_embeddings": True, "head_dim": 16}),
    "gemma2": Released("gemma2", "gemma-2-it.jinja", "gemma", "Gemma2Config", "<bos>", "<eos>", "<pad>", "<end_of_turn>",
                       ["<eos>", "<end_of_turn>"], ["<start_of_turn>"], text_bos=True, system=False,
                       config_keys={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16,
                                    "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0}),
    "phi3": Released("phi3", "phi-3-mini-4k-instruct.jinja", "llama2", "Phi3Config", "<s>", "<|endoftext|>", "<|endoftext|>",
                     "<|end|>", ["<|endoftext|>", "<|assistant|>", "<|end|>"], ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"],
                     config_keys={"original_max_position_embeddings": 1024}),
    "mistral": Released("mistral", "mistral-7b-instruct-v0.3.jinja", "llama2", "MistralConfig", "<s>", "</s>", None, "</s>",
                        ["</s>"], ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                                   "[TOOL_RESULTS]", "[/TOOL_RESULTS]"], text_bos=True, config_keys={"sliding_window": None}),
}


# Phi-3.5's long-context rotary scaling on the tiny Phi-3: an original context of 256 (the factors move every frequency)
LONGROPE = {"original_max_position_embeddings": 256, "rope_scaling": {
    "rope_type": "longrope", "short_factor": [1.0, 1.5, 2.5, 4.0], "long_factor": [2.0, 4.0, 8.0, 16.0]}}


def with_config(family: Released, config_keys: dict) -> Released:
    """The family with other config keys (a rotary scaling, say)."""
    return Released(**{**vars(family), "config_keys": config_keys})


def available() -> bool:
    return all((TEMPLATES / f.template).is_file() for f in FAMILIES.values())


def template(family: Released) -> str:
    return (TEMPLATES / family.template).read_text(encoding="utf-8")


def pubmedqa_rows(n: int = 12) -> list[dict]:
    """n real PubMedQA items (4 of each answer), normalized."""
    import json

    from medsft.tasks import pubmedqa

    raw = json.loads(PUBMEDQA.read_text())
    rows, counts = [], dict.fromkeys(ANSWERS, 0)
    for key in sorted(raw):
        row = pubmedqa.normalize(raw[key], key)
        if counts[row["final_decision"]] < n // 3:
            counts[row["final_decision"]] += 1
            rows.append(row)
    return rows


def corpus() -> list[str]:
    """Text for the vocabularies: medical prompts, and the answer words after a space and after a newline (where a
    template puts them), so that each is learned in both spellings."""
    from medsft.tasks import pubmedqa, synthetic

    texts = [pubmedqa.prompt(pubmedqa.normalize(raw)) + " " + raw["final_decision"] for raw in synthetic.pubmedqa_rows(200, 3)]
    if PUBMEDQA.is_file():
        texts += [pubmedqa.prompt(row) for row in pubmedqa_rows(60)]
    texts += ["Answer: yes\nyes\nno\nmaybe\n Answer: no\nAnswer: maybe\n" * 2] * 40
    texts += ["Question: Which drug?\nA. aspirin\nB. heparin\nC. insulin\nD. morphine\nAnswer: B",
              "system user assistant model You are a helpful medical assistant. Answer yes, no or maybe."] * 20
    return texts


def _bpe(pre_tokenizer, texts: list[str], vocab_size: int, alphabet: list[str]) -> tuple[dict[str, int], list]:
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False))
    import json

    model = json.loads(tok.to_str())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def _sentencepiece_vocab(family: Released, texts: list[str]) -> tuple[dict[str, int], list]:
    """A SentencePiece-style BPE vocabulary: pieces within words (a word's space as its leading ▁), byte fallback for
    every character it lacks (a newline is <0x0A>, as in Llama-2's and Gemma's vocabularies)."""
    from tokenizers import pre_tokenizers

    prepend = "always" if family.kind == "llama2" else "never"
    vocab, merges = _bpe(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend, split=True), texts, 900, [])
    keep = {piece for piece in vocab if "\n" not in piece}
    merges = [m for m in merges if "".join(m) in keep and m[0] in keep and m[1] in keep]
    for word in ANSWERS:  # the spelling without its space mark too, merged last, as a released vocabulary holds both
        if word not in keep:
            left, right = next((word[:k], word[k:]) for k in range(1, len(word)) if word[:k] in keep and word[k:] in keep)
            merges.append((left, right))
            keep.add(word)
            vocab[word] = len(vocab)
    first = ["<unk>", "<pad>", *[t for t in [family.bos, family.eos] if t]]
    pieces = [*dict.fromkeys(first), *[f"<0x{b:02X}>" for b in range(256)],
              *sorted((p for p in keep), key=lambda p: vocab[p])]
    return {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}, merges


def tokenizer_for(family: Released):
    """The family's tokenizer through transformers' class for its kind, with the released template."""
    from tokenizers import AddedToken

    texts = corpus()
    if family.kind == "byte":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab, merges = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), texts, 900, pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        specials = list(dict.fromkeys(t for t in [family.bos, family.eos, family.pad, *family.stops, *family.special] if t))
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in family.added])
        tok.post_processor = zoo.byte_level_post_processor(tok, family.bos if family.text_bos else None)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos,
                                            pad_token=family.pad)
    else:
        from transformers import GemmaTokenizer, LlamaTokenizer

        vocab, merges = _sentencepiece_vocab(family, texts)
        cls = LlamaTokenizer if family.kind == "llama2" else GemmaTokenizer
        keys = dict(bos_token=family.bos, eos_token=family.eos, unk_token="<unk>", add_bos_token=family.text_bos)
        if family.kind == "gemma":
            keys |= {"pad_token": family.pad, "mask_token": "<unk>"}
        tokenizer = cls(vocab=vocab, merges=merges, **keys)
        if family.pad and family.kind == "llama2":
            tokenizer.pad_token = family.pad
    extra = [t for t in dict.fromkeys([*family.stops, *family.special, family.end_of_turn])
             if t not in (family.bos, family.eos, family.pad)]
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    if family.added and family.kind != "byte":
        tokenizer.add_tokens(family.added)
    tokenizer.chat_template = template(family)
    return tokenizer


def build(family: Released, path: Path, hidden: int = 64) -> Path:
    """The family's tiny random-weight model, tokenizer and generation config saved at `path`."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = tokenizer_for(family)
    tokenizer.save_pretrained(path)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in family.stops]
    config = getattr(transformers, family.config)(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **family.config_keys)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=stops if len(stops) > 1 else stops[0])
    model.save_pretrained(path)
    return path


def memorize(model, tokenizer, examples: list, max_length: int, lr: float = 1e-2, threshold: float = 0.01,
             steps: int = 400) -> dict:
    """Full fine-tuning on `examples` encoded exactly as medsft's training encodes them (encoding.Encoder), in one
    batch, until the loss is below `threshold`: the model then holds these rows. Returns the batch and the steps."""
    import torch

    from medsft.data import encoding

    rows = [encoding.Encoder(tokenizer, max_length)(e)[0][0] for e in examples]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels, attention = torch.full_like(ids, -100), torch.zeros_like(ids)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], attention[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(1, steps + 1):
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < threshold:
            break
    model.eval()
    return {"rows": rows, "input_ids": ids, "labels": labels, "attention_mask": attention, "steps": step}


def sharpened(path: Path, to: Path | None = None) -> Path:
    """The model at `path` (saved at `to`, else in place) with its queries and keys scaled up, so that attention
    follows the rotary positions sharply and a position read wrong (a frequency, a query's row order) shows in the
    log-probabilities: a tiny random model attends almost evenly, whatever the positions say."""
    import shutil

    from transformers import AutoModelForCausalLM

    if to is not None:
        shutil.copytree(path, to)
        path = to
    model = AutoModelForCausalLM.from_pretrained(path)
    for name, w in model.named_parameters():
        if name.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight")):
            w.data *= 12.0
    model.save_pretrained(path)
    return path
