"""A model's tokenizer as a run uses it: loaded (a pad token where it has none), with the recipe's tokenizer keys
applied before medsft tokenizes (chat_template_path, eos_token, pad_token), a template checked to be Jinja."""

from __future__ import annotations

import os
from pathlib import Path

from medsft.data import templates
from medsft.errors import UserError
from medsft.models import locate
from medsft.runs import run_folder
from medsft.textfiles import read_text


def _choice(path: str) -> Path | None:
    """Where AutoTokenizer's choice of class for a local folder is remembered: keyed by the files it decides from and
    transformers' version (None for a hub id: AutoTokenizer resolves it)."""
    import hashlib

    import transformers

    folder = Path(path)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256(transformers.__version__.encode())
    for name in (run_folder.MODEL_CONFIG, run_folder.TOKENIZER_CONFIG, "tokenizer.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    return locate.cache_dir() / "tokenizer-classes" / digest.hexdigest()[:24]


def _remembered(memo: Path | None):
    """The class AutoTokenizer chose before for the same files, when it is transformers' own."""
    import importlib

    if memo is None or not memo.is_file():
        return None
    module, _, name = memo.read_text().partition(":")
    return getattr(importlib.import_module(module), name, None) if module.startswith("transformers.") else None


def _remember(memo: Path | None, cls: type) -> None:
    if memo is None or not cls.__module__.startswith("transformers."):
        return
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_name(f".{memo.name}.{os.getpid()}")
        partial.write_text(f"{cls.__module__}:{cls.__qualname__}")
        os.replace(partial, memo)
    except OSError:  # a read-only cache: AutoTokenizer chooses again next time
        pass


def load_tokenizer(path: str, revision: str = "main", trust_remote_code: bool = False):
    """The folder's (or hub id's) tokenizer, as AutoTokenizer loads it. For a local folder the class AutoTokenizer
    chose is remembered and loaded directly next time: AutoTokenizer imports every model's configuration (and torch:
    2.5 s on 2 cores) to choose, which a preview of prepared data needs for nothing else."""
    memo = None if trust_remote_code else _choice(path)
    try:
        known = _remembered(memo)
        if known is not None:
            tokenizer = known.from_pretrained(path, revision=revision)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
            _remember(memo, type(tokenizer))
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


def configure_tokenizer(tokenizer, args, chat_template_kwargs: dict | None = None) -> None:
    """SFTConfig's tokenizer keys, applied before medsft tokenizes (TRL would apply them after): chat_template_path
    (a .jinja file, or a tokenizer whose template is copied), eos_token and pad_token (tokens of the vocabulary);
    and the recipe's chat_template_kwargs, which every render with this tokenizer then passes to the template."""
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
    try:
        templates.use_kwargs(tokenizer, chat_template_kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None


def tokenizer_for(recipe, name: str):
    """The tokenizer at `name` (a resolved model, or a run folder that saved one) with the recipe's keys applied."""
    tokenizer = load_tokenizer(name, recipe.model.model_revision, recipe.training.trust_remote_code)
    configure_tokenizer(tokenizer, recipe.training, recipe.script.chat_template_kwargs)
    return tokenizer
