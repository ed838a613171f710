"""What a tokenizer's chat template renders: a conversation as text and straight to ids (never text tokenized again
with special tokens, which doubles a template's BOS), with the run's `chat_template_kwargs` (Qwen3's
`enable_thinking`, Llama-3.1's `date_string`) in every render; and the token that ends an assistant turn in it.

The keywords travel with the tokenizer (`use_kwargs`), so that training, scoring, the sample panels, `generate` and
`serve` render alike wherever the tokenizer goes; a request may add its own on top (`extra`)."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError

PROBE = "medsft-end-of-turn-probe"  # an assistant turn's text, to see what the template writes after it
_ATTRIBUTE = "medsft_chat_template_kwargs"
# apply_chat_template's own arguments: medsft sets them itself, so they are not template keywords.
RESERVED = ("conversation", "add_generation_prompt", "continue_final_message", "tokenize", "return_dict", "padding",
            "truncation", "max_length", "return_tensors", "return_assistant_tokens_mask", "tokenizer_kwargs",
            "chat_template", "sanitize_control_tokens", "messages")


def marks_generation(template: str | dict[str, str] | None) -> bool:
    """Whether the template marks the assistant's tokens itself with `{% generation %}` (trim variants too; of named
    variants, the default), as TRL's has_generation_markers reads it; here, since importing that module loads
    transformers' model classes (5 s on 2 cores) for what a preview of prepared data never needs."""
    if isinstance(template, dict):
        template = template.get("default")
    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def kwargs_of(tokenizer) -> dict[str, Any]:
    """The chat_template_kwargs the run renders with."""
    return dict(getattr(tokenizer, _ATTRIBUTE, None) or {})


def template_variables(tokenizer) -> set[str] | None:
    """The names the chat template reads (None when it cannot be parsed here)."""
    template = getattr(tokenizer, "chat_template", None)
    return set(_variables(template)) if isinstance(template, str) and _variables(template) is not None else None


@lru_cache(maxsize=16)
def _variables(template: str) -> frozenset[str] | None:
    import jinja2.meta
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        environment = _compile_jinja_template(template).environment
        return frozenset(jinja2.meta.find_undeclared_variables(environment.parse(template)))
    except Exception:  # noqa: BLE001 - a template transformers can render but this parse cannot: do not second-guess it
        return None


def check_kwargs(tokenizer, kwargs: Any, where: str = "chat_template_kwargs") -> dict[str, Any]:
    """`kwargs` as template keywords; ValueError naming the key that is not one (a mapping of names the template reads,
    none of them apply_chat_template's own arguments)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"{where} must be a mapping of template keyword: value, e.g. {{enable_thinking: false}}")
    if kwargs and not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{where} is handed to the chat template and this model has none; remove it")
    variables = template_variables(tokenizer)
    for key in kwargs:
        if key in RESERVED:
            raise ValueError(f"{where}.{key} is set by medsft itself, not a template keyword; remove it")
        if variables is not None and key not in variables:
            close = difflib.get_close_matches(key, sorted(variables), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f" (it reads {', '.join(sorted(variables))})"
            raise ValueError(f"{where}.{key} is not read by this model's chat template{hint}")
    return dict(kwargs)


def use_kwargs(tokenizer, kwargs: dict[str, Any] | None) -> None:
    """Every later render with this tokenizer passes `kwargs` to the template (checked by check_kwargs)."""
    setattr(tokenizer, _ATTRIBUTE, check_kwargs(tokenizer, kwargs))


def chat_text(tokenizer, messages: list[dict], add_generation_prompt: bool = False, extra: dict | None = None) -> str:
    """The chat template's text for `messages`, with the run's keywords (and a request's `extra` on top)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **{**kwargs_of(tokenizer), **(extra or {})})


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False, extra: dict | None = None) -> list[int]:
    """The chat template rendered to ids as transformers does (the text without added special tokens: the template
    writes its own BOS)."""
    return tokenizer(chat_text(tokenizer, messages, add_generation_prompt, extra), add_special_tokens=False)["input_ids"]


def end_of_turn(tokenizer) -> int | None:
    """The token that ends an assistant turn in the tokenizer's chat template: the first special token the template
    writes after the turn's text (Llama-3 <|eot_id|>, Gemma <end_of_turn>, ChatML <|im_end|>, Phi-3 <|end|>, Mistral
    </s>); the tokenizer's EOS where the template writes none, or where there is no template. Kept on the tokenizer
    for as long as its template, keywords and EOS stay the same."""
    key = (getattr(tokenizer, "chat_template", None), repr(sorted(kwargs_of(tokenizer).items())), tokenizer.eos_token_id)
    cached = getattr(tokenizer, "_medsft_end_of_turn", None)
    if cached is None or cached[0] != key:
        cached = (key, _end_of_turn(tokenizer))
        tokenizer._medsft_end_of_turn = cached
    return cached[1]


def _end_of_turn(tokenizer) -> int | None:
    if getattr(tokenizer, "chat_template", None):
        try:
            text = chat_text(tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": PROBE}])
        except TemplateError:
            text = ""
        if PROBE in text:
            after = tokenizer(text[text.index(PROBE) + len(PROBE):], add_special_tokens=False)["input_ids"]
            special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
            found = next((i for i in after if i in special), None)
            if found is not None:
                return found
    return tokenizer.eos_token_id
