"""A model's tokenizer as a run uses it: loaded (a pad token where it has none), with the recipe's tokenizer keys
applied before medsft tokenizes (chat_template_path, eos_token, pad_token), a template checked to be Jinja."""

from __future__ import annotations

from pathlib import Path

from medsft.data import templates
from medsft.errors import UserError
from medsft.textfiles import read_text


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
