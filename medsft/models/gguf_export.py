"""A model written as one GGUF file for llama.cpp, Ollama and LM Studio, with the `gguf` package's writer: the weights
under llama.cpp's names for the architecture (gguf's tensor map; llama's query and key rows interleaved and Gemma's
norms stored as 1 + w, as llama.cpp's converter does), in f16, bf16 or q8_0 (vectors stay float32, as llama.cpp keeps
them); the hyper-parameters llama.cpp reads; the tokenizer (byte-level BPE: tokens, merges, types, special ids, its
pre-tokenizer's name) with the chat template verbatim and the end-of-turn token as an end of generation; the run's
name and provenance under `medsft.*`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medsft.errors import UserError

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2", "Phi3ForCausalLM": "phi3"}
TYPES = ("f16", "bf16", "q8_0")
# llama.cpp's pre-tokenizer names, by the split a byte-level BPE tokenizer makes before its merges (a Split by its regex)
_WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}%s| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {"ByteLevel": "gpt-2", "Digits+ByteLevel": "smollm", f"Split:{_WORDS % ''}+ByteLevel": "qwen2",
                  f"Split:{_WORDS % '{1,3}'}+ByteLevel": "llama-bpe"}


def architecture(model) -> str:
    name = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    if name not in ARCHITECTURES:
        raise UserError(f"{name} cannot be written as GGUF by medsft; it writes {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def _interleaved(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout of a query or key projection (pairs interleaved; transformers' reader undoes it)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model, arch: str):
    """(llama.cpp's name, float32 array) of every weight."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: llama.cpp (and transformers' reader) take the output from token_embd
    for key, w in state.items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"{key} has no GGUF name for architecture {arch}; this model cannot be exported")
        if arch == "llama" and ".attn_q." in name:
            w = _interleaved(w, config.num_attention_heads)
        elif arch == "llama" and ".attn_k." in name:
            w = _interleaved(w, config.num_key_value_heads)
        elif arch == "gemma2" and name.endswith("norm.weight"):
            w = w + 1  # Gemma multiplies by 1 + w; llama.cpp by the stored value
        yield name, w


def _stored(w: np.ndarray, kind: str):
    """(data, raw dtype) of one tensor as the file stores it."""
    import gguf

    if w.ndim < 2:
        return w.astype(np.float32), None
    if kind == "f16":
        return w.astype(np.float16), None
    qtype = gguf.GGMLQuantizationType.BF16 if kind == "bf16" else gguf.GGMLQuantizationType.Q8_0
    if kind == "q8_0" and w.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return w.astype(np.float16), None  # rows not a whole number of q8_0 blocks: f16, as llama.cpp falls back
    return gguf.quants.quantize(w, qtype), qtype


def _hyper_parameters(writer, config, arch: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if (rope.get("rope_type") or "default") != "default":
        raise UserError(f"rope scaling ({rope['rope_type']}) is not written by medsft's GGUF export; export a model with "
                        "plain rotary positions")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0)))
    writer.add_vocab_size(config.vocab_size)
    if arch in ("llama", "phi3"):
        writer.add_rope_dimension_count(head_dim)
    if arch in ("qwen3", "gemma2"):
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma2":
        if config.query_pre_attn_scalar not in (head_dim, config.hidden_size // config.num_attention_heads):
            raise UserError(f"query_pre_attn_scalar {config.query_pre_attn_scalar} is neither head_dim nor hidden_size / "
                            "num_attention_heads, the two scalings llama.cpp's Gemma-2 uses; this model cannot be exported")
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
        writer.add_sliding_window(config.sliding_window)


def _pre_tokenizer(spec: dict) -> str:
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    key = "+".join(f"Split:{p['pattern'].get('Regex')}" if p.get("type") == "Split" else str(p.get("type")) for p in parts)
    if spec.get("model", {}).get("type") != "BPE" or key not in PRE_TOKENIZERS:
        raise UserError(f"this tokenizer ({spec.get('model', {}).get('type')}, pre-tokenizer {key[:60]}) is not written by "
                        f"medsft's GGUF export; it writes byte-level BPE tokenizers ({', '.join(PRE_TOKENIZERS.values())})")
    return PRE_TOKENIZERS[key]


def _tokenizer(writer, tokenizer, vocab_size: int, end_of_turn: int | None) -> None:
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(spec))
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id = {i: t for t, i in spec["model"]["vocab"].items()} | {i: t["content"] for i, t in added.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL if i in by_id else gguf.TokenType.UNUSED)
        tokens.append(by_id.get(i, f"[PAD{i}]"))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id), (writer.add_eot_token_id, end_of_turn)):
        if token_id is not None:
            add(token_id)
    bos = tokenizer.bos_token_id
    writer.add_add_bos_token(bool(bos is not None and tokenizer("a")["input_ids"][:1] == [bos]))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def write(model, tokenizer, out: Path, kind: str, name: str, provenance: dict[str, Any], end_of_turn: int | None) -> None:
    """`model` (plain, float weights) and `tokenizer` into the GGUF file `out`."""
    import gguf

    arch = architecture(model)
    types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(name)
    writer.add_file_type(types[kind])
    _hyper_parameters(writer, model.config, arch)
    _tokenizer(writer, tokenizer, model.config.vocab_size, end_of_turn)
    for key, value in provenance.items():
        writer.add_string(f"medsft.{key}", value if isinstance(value, str) else json.dumps(value))
    for tensor, w in _tensors(model, arch):
        data, raw = _stored(w, kind)
        writer.add_tensor(tensor, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
