"""What a tokenizer's chat template renders: a conversation straight to ids (never text tokenized again, which doubles
a template's BOS), and the token that ends an assistant turn in it."""

from __future__ import annotations

from jinja2 import TemplateError

PROBE = "medsft-end-of-turn-probe"  # an assistant turn's text, to see what the template writes after it


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """The chat template rendered straight to ids: never text tokenized again, which doubles a template's BOS."""
    return list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                              return_dict=False))


def end_of_turn(tokenizer) -> int | None:
    """The token that ends an assistant turn in the tokenizer's chat template: the first special token the template
    writes after the turn's text (Llama-3 <|eot_id|>, Gemma <end_of_turn>, ChatML <|im_end|>, Phi-3 <|end|>, Mistral
    </s>); the tokenizer's EOS where the template writes none, or where there is no template."""
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": PROBE}],
                                                 tokenize=False)
        except TemplateError:
            text = ""
        if PROBE in text:
            after = tokenizer(text[text.index(PROBE) + len(PROBE):], add_special_tokens=False)["input_ids"]
            special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
            found = next((i for i in after if i in special), None)
            if found is not None:
                return found
    return tokenizer.eos_token_id
