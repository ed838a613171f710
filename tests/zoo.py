"""A model zoo for tests, offline: tiny random-weight models built from the real configuration classes of the families
users fine-tune, each with a tokenizer trained here and a chat template written for these tests in that family's
documented shape (turn markers, end-of-turn token, BOS, system role), none copied from a release.

| family  | config      | BOS written by        | end of turn      | tokenizer EOS     | generation_config eos      | system turn        |
| ------- | ----------- | --------------------- | ---------------- | ----------------- | -------------------------- | ------------------ |
| llama3  | Llama       | the template          | <|eot_id|>       | <|end_of_text|>   | [end_of_text, eot_id]      | a header like any  |
| qwen2   | Qwen2       | none                  | <|im_end|>       | <|im_end|>        | [im_end, endoftext]        | a default one      |
| gemma2  | Gemma2      | the template          | <end_of_turn>    | <eos>             | [eos, end_of_turn]         | raises             |
| mistral | Mistral     | the template          | </s>             | </s>              | </s>                       | folded into [INST] |
| phi3    | Phi3        | none                  | <|end|>          | <|endoftext|>     | [endoftext, assistant, end]| <|system|>         |
| gpt2    | GPT2        | none                  | (no template)    | <|endoftext|>     | endoftext                  | -                  |

No template has {% generation %} markers (most real ones lack them). Gemma-2 keeps its sliding window and hybrid
cache (the window is 16 tokens here, so generation and training cross it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN2 = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful medical assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA2 = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
MISTRAL = (
    "{% set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    "{% set turns = messages[1:] if system else messages %}"
    "{{ bos_token }}{% for m in turns %}{% if m['role'] == 'user' %}"
    "[INST] {{ system + '\n\n' if system and loop.first else '' }}{{ m['content'] }} [/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}{% endfor %}"
)
PHI3 = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<|system|>\n{{ m['content'] }}<|end|>\n"
    "{% elif m['role'] == 'user' %}<|user|>\n{{ m['content'] }}<|end|>\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}"
)


@dataclass
class Family:
    name: str
    config: str  # the transformers configuration class
    bos: str | None
    eos: str
    pad: str | None
    end_of_turn: str | None  # the template's end-of-turn token
    stops: list[str]  # generation_config.eos_token_id, as tokens
    template: str | None
    text_bos: bool  # the tokenizer puts BOS before plain text
    system: str  # "turn" (a turn like any), "default" (one inserted when absent), "raises", "folded"
    extra: list[str] = field(default_factory=list)  # other special tokens of the template
    config_keys: dict = field(default_factory=dict)


FAMILIES = {
    "llama3": Family("llama3", "LlamaConfig", "<|begin_of_text|>", "<|end_of_text|>", None, "<|eot_id|>",
                     ["<|end_of_text|>", "<|eot_id|>"], LLAMA3, True, "turn", ["<|start_header_id|>", "<|end_header_id|>"],
                     {"rope_theta": 500000.0}),
    "qwen2": Family("qwen2", "Qwen2Config", None, "<|im_end|>", "<|endoftext|>", "<|im_end|>",
                    ["<|im_end|>", "<|endoftext|>"], QWEN2, False, "default", ["<|im_start|>"], {"tie_word_embeddings": True}),
    "gemma2": Family("gemma2", "Gemma2Config", "<bos>", "<eos>", "<pad>", "<end_of_turn>", ["<eos>", "<end_of_turn>"],
                     GEMMA2, True, "raises", ["<start_of_turn>"],
                     {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 16, "final_logit_softcapping": 30.0,
                      "attn_logit_softcapping": 50.0}),
    "mistral": Family("mistral", "MistralConfig", "<s>", "</s>", None, "</s>", ["</s>"], MISTRAL, True, "folded",
                      ["[INST]", "[/INST]"], {"sliding_window": None}),
    "phi3": Family("phi3", "Phi3Config", "<s>", "<|endoftext|>", "<|endoftext|>", "<|end|>",
                   ["<|endoftext|>", "<|assistant|>", "<|end|>"], PHI3, False, "turn", ["<|system|>", "<|user|>", "<|assistant|>"],
                   {"original_max_position_embeddings": 512}),
    "gpt2": Family("gpt2", "GPT2Config", "<|endoftext|>", "<|endoftext|>", None, None, ["<|endoftext|>"], None, False, "none"),
}
CHAT_FAMILIES = [name for name, f in FAMILIES.items() if f.template]


def corpus() -> list[str]:
    """Text for the tokenizers: the tests' medical prompts, in each family's turn shapes."""
    from medsft.tasks import synthetic
    from medsft.tasks import pubmedqa

    texts = [pubmedqa.prompt(pubmedqa.normalize(raw)) + " " + raw["final_decision"] for raw in synthetic.pubmedqa_rows(200, 3)]
    texts += [raw["text"] for raw in synthetic.report_rows(100, 3)]
    texts += ["Question: Which drug?\nA. aspirin\nB. heparin\nC. insulin\nD. morphine\nAnswer: B",
              "system user assistant model You are a helpful medical assistant. Answer yes, no or maybe."] * 20
    return texts


def tokenizer_for(family: Family):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = list(dict.fromkeys(t for t in [family.bos, family.eos, family.pad, family.end_of_turn, *family.stops,
                                              *family.extra] if t))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=700, special_tokens=special,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = byte_level_post_processor(tok, family.bos if family.text_bos else None)
    extra = [t for t in special if t not in (family.bos, family.eos, family.pad)]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos,
                                        pad_token=family.pad, additional_special_tokens=extra)
    tokenizer.chat_template = family.template
    return tokenizer


def byte_level_post_processor(tok, bos: str | None):
    """Byte-level offsets kept as they are, and `bos` before plain text where the tokenizer adds one."""
    from tokenizers import processors

    byte_level = processors.ByteLevel(trim_offsets=False)
    if bos is None:
        return byte_level
    return processors.Sequence([byte_level, processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])])


def build(family: Family, path: Path) -> Path:
    """The family's tiny model, tokenizer and generation config saved at `path` (seconds)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = tokenizer_for(family)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in family.stops}
    size = dict(n_embd=32, n_layer=2, n_head=2, n_positions=512) if family.config == "GPT2Config" else dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=512)
    config = getattr(transformers, family.config)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **size, **family.config_keys)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    stops = [ids[t] for t in family.stops]
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=stops if len(stops) > 1 else stops[0])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def steer(model, ids: list[int], token: int, weight: float = 60.0) -> None:
    """Make `token` by far the likeliest continuation of `ids` (this exact prompt): the LM head row of `token`
    turned toward the prompt's last hidden state. What follows decides whether generation stops there."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        hidden = out.hidden_states[-1][0, -1]
        head = model.get_output_embeddings().weight
        if getattr(model.config, "tie_word_embeddings", False):  # keep the input embedding as it was
            model.config.tie_word_embeddings = False
            model.get_output_embeddings().weight = torch.nn.Parameter(head.detach().clone())
            head = model.get_output_embeddings().weight
        head[token] = weight * hidden / hidden.norm() ** 2
