"""The recipe's trainer settings under `trainer: grpo`: TRL's GRPOConfig, plus the SFTConfig keys that shape the
tokens rather than the loss, so that a GRPO recipe renders and shortens its prompts exactly as an SFT recipe does."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig


@dataclass
class MedsftGRPOConfig(GRPOConfig):
    max_length: int | None = field(default=1024, metadata={
        "help": "The longest prompt + reply: a prompt is shortened as SFT shortens it (the question kept) to leave "
                "max_completion_length for the reply; also the length evaluation scores within."})
    chat_template_path: str | None = field(default=None, metadata={
        "help": "SFTConfig's: a .jinja chat template, or a tokenizer whose template is used."})
    eos_token: str | None = field(default=None, metadata={"help": "SFTConfig's: the token that ends a reply."})
    pad_token: str | None = field(default=None, metadata={"help": "SFTConfig's: the padding token."})
