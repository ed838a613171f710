"""One loader for training and inference: a model loaded as its recipe says (dtype, attention implementation, 4/8-bit
quantization: a QLoRA adapter goes back onto the NF4 base it was trained against) on the device this machine gives
the recipe, a run's adapter on top and the run's own tokenizer."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.models import locate, stages
from medsft.models.tokenizer import tokenizer_for
from medsft.runs import run_folder


def device(recipe=None) -> str:
    """CUDA when this machine has it and the recipe (if any) does not ask for the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() and not (recipe is not None and recipe.training.use_cpu) else "cpu"


def quantized(recipe) -> bool:
    return bool(recipe.model.load_in_4bit or recipe.model.load_in_8bit)


SAVED = "saved"  # the checkpoint's own dtype on any device: what an export converts, a tensor at a time


def resolved_dtype(dtype: str | None, where: str) -> str:
    """The dtype weights load in: `auto` is the checkpoint's own on a GPU and float32 on the CPU (whose bf16 matmuls
    are slower, and where medsft computes in float32 under bf16 autocast); SAVED is the checkpoint's own everywhere;
    none given is float32 (TRL's default too: float32 master weights under bf16 autocast)."""
    if dtype == SAVED:
        return "auto"
    if dtype == "auto":
        return "auto" if where == "cuda" else "float32"
    return dtype or "float32"


def placement(dtype: str | None, device_map: str | None, where: str) -> dict[str, Any]:
    """from_pretrained's dtype and, where given, device_map (the model then stays where it puts it)."""
    return {"dtype": resolved_dtype(dtype, where), **({"device_map": device_map} if device_map else {})}


def base_kwargs(recipe) -> dict[str, Any]:
    """from_pretrained's arguments that training (through TRL's model_init_kwargs) and inference share."""
    m = recipe.model
    return dict(
        revision=m.model_revision,
        trust_remote_code=recipe.training.trust_remote_code,
        attn_implementation=m.attn_implementation,
        **placement(m.dtype, recipe.script.device_map, device(recipe)),
    )


def model_kwargs(recipe, dequantize: bool = False) -> dict[str, Any]:
    """from_pretrained's arguments for the recipe's model, k-bit quantization included. `dequantize`: the compute
    dtype instead of k-bit weights (what merge folds an adapter into)."""
    from trl import get_quantization_config

    m = recipe.model
    kwargs = base_kwargs(recipe)
    if quantized(recipe) and not dequantize:
        import torch

        if not torch.cuda.is_available():
            bits = 4 if m.load_in_4bit else 8
            raise UserError(f"{recipe.training.output_dir} was trained on a {bits}-bit base (bitsandbytes), which loads on a "
                            "CUDA GPU only; on this machine merge it first (python -m medsft merge RUN OUT_DIR) and use the "
                            "merged model")
        # k-bit weights are quantized on the GPU that holds them, as TRL's get_kbit_device_map places them
        kwargs |= {"quantization_config": get_quantization_config(m), "device_map": {"": torch.cuda.current_device()}}
    return kwargs


def load_model(recipe, path: str | Path, dequantize: bool = False):
    """The model at `path` (a resolved base or a saved full model) with the recipe's settings, on its device."""
    from transformers import AutoModelForCausalLM

    kwargs = model_kwargs(recipe, dequantize)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model if "device_map" in kwargs else model.to(device(recipe))


def load_run(recipe, run: Path | None, dequantize: bool = False):
    """The run's full model, or its base with the run's adapter; without a run, the base. The model only: the
    tokenizer is the caller's (the run's own when it saved one)."""
    if run is not None and run_folder.holds_model(run):  # a full fine-tune or a scratch model saved whole
        return load_model(recipe, run, dequantize)
    model = load_model(recipe, stages.base(recipe.model.model_name_or_path), dequantize)
    if run is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, run)


def run_tokenizer(recipe, run: Path | None):
    """The run's tokenizer (its chat template and EOS) where it saved one, else the base's, with the recipe's keys."""
    if run is not None and run_folder.holds_tokenizer(run):
        return tokenizer_for(recipe, str(run))
    return tokenizer_for(recipe, stages.base(recipe.model.model_name_or_path))


def load_trained(recipe, run: Path | None, dequantize: bool = False):
    """(model, tokenizer) for evaluation, generation and merge, loaded as the recipe trained it: the run's
    full model, or the base + the run's adapter, with the run's tokenizer; without a run, the base model.
    `dequantize`: a k-bit base in its compute dtype (what merge folds the adapter into)."""
    return load_run(recipe, run, dequantize), run_tokenizer(recipe, run)


def full_fine_tune(recipe, run: Path | None = None) -> bool:
    """Whether the run trains (or trained) every weight of a pretrained base: its base is then another model."""
    if recipe.model.model_name_or_path == locate.SCRATCH:
        return False
    return run_folder.holds_model(run) if run is not None else not recipe.model.use_peft


def base_of(recipe, model):
    """The pretrained weights a full fine-tune started from, loaded to score beside it where it was not scored on its
    own first (an adapter's base needs no second load: the adapter is disabled; a model from scratch has none)."""
    if hasattr(model, "disable_adapter") or recipe.model.model_name_or_path == locate.SCRATCH:
        return None
    return load_model(recipe, stages.root(recipe.model.model_name_or_path))  # a stage's: its chain's first model


@contextmanager
def start_scoring(recipe, model, trained: bool = True):
    """For a stage (model_name_or_path a run folder, stages.py): yields use(), a context that holds the model the
    stage started from, to score it beside base and tuned; None for any other run. A LoRA stage's start is its start
    run's adapter loaded beside the trained one on the same base (switched to while scored); a full stage's, the
    start's weights loaded once, after training."""
    begin = stages.start(recipe.model.model_name_or_path) if trained else None
    if begin is None:
        yield None
        return
    if begin.adapter and hasattr(model, "load_adapter") and hasattr(model, "peft_config"):
        model.load_adapter(str(begin.folder), adapter_name=START)
        active = model.active_adapter

        @contextmanager
        def use():
            model.set_adapter(START)
            try:
                yield model
            finally:
                model.set_adapter(active)

        try:
            yield use
        finally:
            model.delete_adapter(START)
        return
    start = load_model(recipe, begin.folder) if not begin.adapter else stages.adapter_on(load_model(recipe, begin.base),
                                                                                         _folded(recipe), begin)
    start.eval()

    @contextmanager
    def held():
        yield start

    yield held  # released with this context

START = "medsft_start"  # the start run's adapter, loaded beside the stage's own while it is scored


def _folded(recipe):
    """The recipe as adapter_on reads it for a start folded into its base (scored, never trained)."""
    from copy import copy

    folded = copy(recipe)
    folded.model, folded.given = copy(recipe.model), []
    folded.model.use_peft = False
    return folded
