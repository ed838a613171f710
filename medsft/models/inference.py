"""Any model a user names, loaded for inference (generate, serve, merge): a medsft run or one of its checkpoints (as
its recipe trained it), an adapter folder, a model folder, a hub id or the embedded alias."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medsft.data import templates
from medsft.errors import UserError
from medsft.models import loading, locate
from medsft.models.tokenizer import load_tokenizer
from medsft.recipe import mixture
from medsft.runs import run_folder, run_state
from medsft.recipe.keys import DataSpec


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    name: str
    spec: DataSpec  # the run's first dataset (its task and prompt style), or the defaults for a plain model
    context: int | None  # longest sequence the model takes
    max_length: int | None = None  # a run's: the longest row it trained on (prompts are shortened to fit it)


def _run(path: Path, folder: Path, trust_remote_code: bool, dequantize: bool, placed: dict):
    """(model, tokenizer, spec, max_length) of a run folder or one of its checkpoints, loaded with the run's recipe
    (its tokenizer renders with the run's chat_template_kwargs) and the command line's dtype and device_map."""
    trust = ["--trust_remote_code", "true"] if trust_remote_code else []
    given = [arg for key, value in placed.items() if value and value != loading.SAVED for arg in (f"--{key}", value)]
    recipe = run_folder.parse_run(folder, ["--output_dir", str(folder), *trust, *given])
    if placed.get("dtype") == loading.SAVED:  # not a recipe's dtype: set once the recipe is read
        recipe.model.dtype = loading.SAVED
    if dequantize and loading.quantized(recipe):
        print(f"medsft: {path} was trained on a {'4' if recipe.model.load_in_4bit else '8'}-bit base; merging "
              f"into that base dequantized to {recipe.model.dtype or 'float32'}", file=sys.stderr)
    model, tokenizer = loading.load_trained(recipe, path, dequantize)
    return model, tokenizer, mixture.specs(recipe.script, recipe.training)[0], recipe.training.max_length


def _placed(model, placed: dict):
    """The model on this machine's device, unless a device_map placed it."""
    return model if placed.get("device_map") else model.to(loading.device())


def _adapter(path: Path, trust_remote_code: bool, placed: dict):
    """(model, tokenizer) of a bare adapter folder, on the base its adapter_config.json names."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = locate.resolve(run_folder.adapter_base(path))
    model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=trust_remote_code,
                                                 **loading.placement(placed.get("dtype"), placed.get("device_map"), loading.device()))
    tokenizer = load_tokenizer(str(path) if run_folder.holds_tokenizer(path) else base,
                               trust_remote_code=trust_remote_code)
    return _placed(PeftModel.from_pretrained(model, path), placed), tokenizer


def _model(name: str, path: Path, trust_remote_code: bool, placed: dict):
    """(model, tokenizer) of a model folder, a hub id or the embedded alias."""
    from transformers import AutoModelForCausalLM

    if path.exists() and not run_folder.holds_model(path):
        raise UserError(f"{path} holds no model: expected a medsft run, an adapter or a model folder")
    resolved = locate.resolve(name)
    model = AutoModelForCausalLM.from_pretrained(resolved, trust_remote_code=trust_remote_code,
                                                 **loading.placement(placed.get("dtype"), placed.get("device_map"), loading.device()))
    return _placed(model, placed), load_tokenizer(resolved, trust_remote_code=trust_remote_code)


def load(name: str, trust_remote_code: bool = False, dequantize: bool = False,
         chat_template_kwargs: dict | None = None, dtype: str | None = None, device_map: str | None = None) -> Loaded:
    """The model `name` names, in eval mode, with its context length. `trust_remote_code` comes from the command line
    only; `dequantize`: a k-bit base in its compute dtype (for merge); `chat_template_kwargs`: template keywords on
    top of a run's own; `dtype` (a run's own by default, else float32; `auto`: the checkpoint's on a GPU;
    loading.SAVED: the checkpoint's on any device) and
    `device_map` (across this machine's GPUs). A run that did not finish, or anything that cannot be loaded, is one
    UserError line."""
    placed = {"dtype": dtype, "device_map": device_map}
    path = Path(name).expanduser()
    folder = run_folder.folder_of(path) if path.is_dir() else None
    run_state.require_finished(path)
    spec, max_length = DataSpec(), None
    try:
        if folder is not None:
            model, tokenizer, spec, max_length = _run(path, folder, trust_remote_code, dequantize, placed)
        elif run_folder.holds_adapter(path):
            model, tokenizer = _adapter(path, trust_remote_code, placed)
        else:
            model, tokenizer = _model(name, path, trust_remote_code, placed)
    except OSError as e:
        raise UserError(f"cannot load model {name}: {str(e).splitlines()[0]}") from None
    if chat_template_kwargs:
        try:
            templates.use_kwargs(tokenizer, {**templates.kwargs_of(tokenizer), **chat_template_kwargs})
        except ValueError as e:
            raise UserError(str(e)) from None
    model.eval()
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return Loaded(model, tokenizer, name, spec, context, max_length)
