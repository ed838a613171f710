"""A small GPT-2 from scratch: a byte-level BPE tokenizer trained on the run's training text and a randomly
initialised model of the recipe's shape (`scratch_config`, GPT2Config's fields)."""

from __future__ import annotations

from typing import Any

from medsft.errors import UserError


def train_tokenizer(texts: list[str], vocab_size: int = 8192):
    """A byte-level BPE tokenizer trained on `texts` (GPT-2 style), with <|endoftext|> as BOS, EOS and pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[special], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=special, eos_token=special, pad_token=special)


def build_scratch(texts: list[str], scratch_config: dict[str, Any] | None, max_length: int | None, seed: int = 0):
    """A randomly initialised GPT-2 of the recipe's shape (initialised under the recipe's seed) and a tokenizer
    trained on the training text."""
    from transformers import GPT2Config, GPT2LMHeadModel, set_seed

    cfg = dict(scratch_config or {})
    tokenizer = train_tokenizer(texts, int(cfg.pop("vocab_size", 8192)))
    cfg.setdefault("n_positions", max_length or 1024)
    try:
        config = GPT2Config(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **cfg,
        )
    except (TypeError, ValueError) as e:
        raise UserError(f"scratch_config: {e}") from None
    unknown = sorted(set(cfg) - set(GPT2Config().to_dict()))
    if unknown:
        raise UserError(f"scratch_config: unknown GPT2Config field '{unknown[0]}'")
    set_seed(seed)
    return GPT2LMHeadModel(config), tokenizer
