"""The recipe's trainer settings under `trainer: dpo`, `kto` and `orpo`: TRL's DPOConfig, KTOConfig and ORPOConfig
(ORPO's from `trl.experimental.orpo`, where TRL 1.16 keeps it), plus SFTConfig's keys that shape the tokens, so that
a preference recipe renders and shortens its prompts and answers exactly as an SFT recipe does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import DPOConfig, KTOConfig

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO lives in trl.experimental in TRL 1.16: said in the docs
from trl.experimental.orpo import ORPOConfig  # noqa: E402


def _chat_template_path():
    return field(default=None, metadata={"help": "SFTConfig's: a .jinja chat template, or a tokenizer whose template is used."})


def _eos_token():
    return field(default=None, metadata={"help": "SFTConfig's: the token that ends an answer."})


def _pad_token():
    return field(default=None, metadata={"help": "SFTConfig's: the padding token."})


@dataclass
class MedsftDPOConfig(DPOConfig):
    chat_template_path: str | None = _chat_template_path()
    eos_token: str | None = _eos_token()


@dataclass
class MedsftKTOConfig(KTOConfig):
    chat_template_path: str | None = _chat_template_path()
    eos_token: str | None = _eos_token()
    pad_token: str | None = _pad_token()


@dataclass
class MedsftORPOConfig(ORPOConfig):
    chat_template_path: str | None = _chat_template_path()
    eos_token: str | None = _eos_token()
    pad_token: str | None = _pad_token()
