"""A model written as one GGUF file for llama.cpp, Ollama and LM Studio, with the `gguf` package's writer: the weights
under llama.cpp's names for the architecture (gguf's tensor map; llama's query and key rows interleaved, Gemma's
norms stored as 1 + w and GPT-2's Conv1D weights transposed, as llama.cpp's converter does), in f16, bf16 or q8_0
(vectors stay float32, as llama.cpp keeps them); the hyper-parameters llama.cpp reads; rotary scaling (Llama 3's,
Phi-3.5's long context); the tokenizer (`gguf_vocab`) with the chat template verbatim and the end-of-turn token as an
end of generation; the run's name and provenance under `medsft.*`.

Streamed: every tensor's name, shape and stored size are known from the model without converting it, so the header
and the tensor table are written first, then each tensor is converted and written alone. Memory holds the model as
it was loaded plus one tensor in float32 and its stored form, never a second copy of the model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from medsft.errors import UserError
from medsft.evaluation.sharing import Track, no_track
from medsft.export import gguf_vocab

ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                 "Qwen3ForCausalLM": "qwen3", "Gemma2ForCausalLM": "gemma2", "Phi3ForCausalLM": "phi3",
                 "GPT2LMHeadModel": "gpt2"}
# GPT-2's Conv1D layers keep their weights as (in, out); llama.cpp's as a linear layer's (out, in)
CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
TYPES = ("f16", "bf16", "q8_0")
# rotary scalings that only rescale each frequency, which llama.cpp's llama takes as a tensor of divisors (rope_freqs),
# and Phi-3's long-context one (two sets of divisors and an attention factor)
FREQUENCY_SCALINGS = ("llama3", "linear")
SCALINGS = {"llama": FREQUENCY_SCALINGS, "phi3": ("longrope",)}


def architecture(model) -> str:
    name = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    if name not in ARCHITECTURES:
        raise UserError(f"{name} cannot be written as GGUF by medsft; it writes {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def _interleaved(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout of a query or key projection (pairs interleaved; transformers' reader undoes it)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model, arch: str) -> list[tuple[str, tuple[int, ...], Any]]:
    """(llama.cpp's name, its shape, a function giving it as a float32 array) of every weight, in the file's order:
    nothing is converted until the function is called."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    state = model.state_dict()  # the model's own tensors: no copy
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # tied: llama.cpp (and transformers' reader) take the output from token_embd
    out = []
    for key, tensor in state.items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"{key} has no GGUF name for architecture {arch}; this model cannot be exported")
        shape = tuple(tensor.shape)
        transposed = arch == "gpt2" and key.endswith(CONV1D)
        out.append((name, shape[::-1] if transposed else shape, _converter(tensor, name, arch, config, transposed)))
    return out


def _converter(tensor, name: str, arch: str, config, transposed: bool):
    def convert() -> np.ndarray:
        w = tensor.detach().float().cpu().numpy()
        if arch == "llama" and ".attn_q." in name:
            return _interleaved(w, config.num_attention_heads)
        if arch == "llama" and ".attn_k." in name:
            return _interleaved(w, config.num_key_value_heads)
        if arch == "gemma2" and name.endswith("norm.weight"):
            return w + 1  # Gemma multiplies by 1 + w; llama.cpp by the stored value
        return np.ascontiguousarray(w.T) if transposed else w
    return convert


def _layout(shape: tuple[int, ...], kind: str):
    """(numpy dtype, raw GGML type or None) of a tensor of `shape` as the file stores it (_stored gives the data)."""
    import gguf

    if len(shape) < 2:
        return np.float32, None
    if kind == "f16":
        return np.float16, None
    qtype = gguf.GGMLQuantizationType.BF16 if kind == "bf16" else gguf.GGMLQuantizationType.Q8_0
    if kind == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return np.float16, None  # rows not a whole number of q8_0 blocks: f16, as llama.cpp falls back
    return np.uint8, qtype


def _info(writer, name: str, shape: tuple[int, ...], kind: str) -> None:
    """The tensor's entry in the file's table, from its shape alone."""
    import gguf

    dtype, raw = _layout(shape, kind)
    stored = gguf.quant_shape_to_byte_shape(shape, raw) if raw is not None else shape
    writer.add_tensor_info(name, stored, np.dtype(dtype), int(np.prod(stored)) * np.dtype(dtype).itemsize, raw_dtype=raw)


def _stored(w: np.ndarray, kind: str) -> np.ndarray:
    """One tensor's data as the file stores it."""
    import gguf

    dtype, raw = _layout(w.shape, kind)
    return gguf.quants.quantize(w, raw) if raw is not None else w.astype(dtype)


def _rope(config) -> dict:
    return getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}


def _original_context(rope: dict, config) -> int:
    return int(rope.get("original_max_position_embeddings") or config.original_max_position_embeddings)


def _rope_scaling(writer, model) -> list[tuple[str, np.ndarray]]:
    """The rotary scaling as llama.cpp reads it (its keys written, its small tensors returned): Phi-3's long and short
    factors as given, with the original context (llama.cpp takes the long factors where its context exceeds it) and
    transformers' attention factor, which scales cos and sin; another scaling as each frequency's divisor
    (rope_freqs): the plain frequencies of the head size and base over the ones transformers computed for it."""
    import gguf

    rope = _rope(model.config)
    kind = rope.get("rope_type") or "default"
    if kind == "longrope":
        writer.add_rope_scaling_orig_ctx_len(_original_context(rope, model.config))
        writer.add_rope_scaling_attn_factors(float(model.get_decoder().rotary_emb.attention_scaling))
        return [(gguf.TENSOR_NAMES[tensor] + ".weight", np.array(factors, np.float32))
                for tensor, factors in ((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, rope["long_factor"]),
                                        (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, rope["short_factor"]))]
    if kind == "default":
        return []
    rotary = model.get_decoder().rotary_emb
    dims = rotary.inv_freq.shape[0] * 2
    base = float(rope.get("rope_theta") or model.config.rope_theta)
    plain = 1.0 / base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    divisors = (plain / rotary.inv_freq.double().cpu().numpy()).astype(np.float32)
    return [(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", divisors)]


def context_note(model, max_length: int | None) -> str | None:
    """What a user must pass llama.cpp for it to rotate positions as the run trained: Phi-3's long factors are
    taken whenever llama.cpp's context exceeds the original one (transformers takes them only for a longer text)."""
    rope = _rope(model.config)
    if rope.get("rope_type") != "longrope":
        return None
    original = _original_context(rope, model.config)
    trained = "the run's texts were no longer" if max_length and max_length <= original else "shorter texts use them"
    return (f"llama.cpp: Phi-3's long-context factors are used whenever the context (-c) exceeds {original} tokens; "
            f"the run scored with the short ones ({trained}): run llama.cpp with -c {original} or less to match it")


def _gpt2_hyper_parameters(writer, config) -> None:
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_vocab_size(config.vocab_size)


def _hyper_parameters(writer, config, arch: str) -> None:
    if arch == "gpt2":
        return _gpt2_hyper_parameters(writer, config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = _rope(config)
    kind = rope.get("rope_type") or "default"
    if kind != "default" and kind not in SCALINGS.get(arch, ()):
        raise UserError(f"rope scaling {kind} of {arch} is not written by medsft's GGUF export (it writes "
                        f"{', '.join(FREQUENCY_SCALINGS)} for Llama, longrope for Phi-3); export a model with plain "
                        "rotary positions")
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
        scalar = gemma2_query_scalar(config.num_hidden_layers, config.hidden_size, config.num_attention_heads, head_dim)
        if config.query_pre_attn_scalar != scalar:
            raise UserError(f"query_pre_attn_scalar {config.query_pre_attn_scalar} is not what llama.cpp's Gemma-2 uses "
                            f"for a {config.num_hidden_layers}-layer model ({scalar}: hidden_size / num_attention_heads "
                            "at 46 layers, the 27B, else head_dim); this model cannot be exported")
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
        writer.add_sliding_window(config.sliding_window)


def gemma2_query_scalar(layers: int, hidden: int, heads: int, head_dim: int) -> int:
    """What llama.cpp's Gemma-2 scales queries by (1/sqrt of it): hidden / heads for the 46-layer model (it calls
    it the 27B), the head size at any other depth; nothing in the file says otherwise."""
    return hidden // heads if layers == 46 else head_dim


def _name(name: str, tokenizer) -> str:
    """The run's name as general.name. llama.cpp marks Phi-3's special tokens for any model whose name holds "phi3" or
    "phi-3" and fails to load a vocabulary without Phi-3's <unk>, <s>, </s> and <|endoftext|>: such a name is written
    with "phi_3" instead (the run's path is in medsft.run whatever its name)."""
    vocab = tokenizer.get_vocab()
    if all(t in vocab for t in ("<unk>", "<s>", "</s>", "<|endoftext|>")):
        return name
    return re.sub("phi-?3", "phi_3", name, flags=re.IGNORECASE)


def write(model, tokenizer, out: Path, kind: str, name: str, provenance: dict[str, Any], end_of_turn: int | None,
          texts: list[str], track: Track = no_track) -> None:
    """`model` (plain, float weights) and `tokenizer` into the GGUF file `out`, a tensor at a time (`track(tensors,
    count)` shows them pass); `texts`: the run's texts as training renders them (where a SentencePiece tokenizer puts
    a space, gguf_vocab)."""
    import gguf

    arch = architecture(model)
    types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name(_name(name, tokenizer))
    writer.add_file_type(types[kind])
    _hyper_parameters(writer, model.config, arch)
    gguf_vocab.write(writer, tokenizer, model.config.vocab_size, end_of_turn, texts)
    for key, value in provenance.items():
        writer.add_string(f"medsft.{key}", value if isinstance(value, str) else json.dumps(value))
    small = [(tensor, (lambda w=w: w), w.shape) for tensor, w in _rope_scaling(writer, model)]
    tensors = small + [(tensor, convert, shape) for tensor, shape, convert in _tensors(model, arch)]
    for tensor, _, shape in tensors:
        _info(writer, tensor, shape, kind)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for _, convert, _ in track(tensors, len(tensors)):
            writer.write_tensor_data(_stored(convert(), kind))
    finally:
        writer.close()
