"""A model loaded as its recipe trained it, for eval, generate, serve and merge: the recipe's dtype, attention
implementation and 4/8-bit quantization (a QLoRA adapter goes back onto the NF4 base it was trained against), on
the device this machine gives the recipe, the adapter on top."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsft import models
from medsft.errors import UserError


def device(recipe=None) -> str:
    """CUDA when this machine has it and the recipe (if any) does not ask for the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() and not (recipe is not None and recipe.training.use_cpu) else "cpu"


def quantized(recipe) -> bool:
    return bool(recipe.model.load_in_4bit or recipe.model.load_in_8bit)


def model_kwargs(recipe, dequantize: bool = False) -> dict[str, Any]:
    """from_pretrained's arguments for the recipe's model. `dequantize`: the compute dtype instead of k-bit weights
    (what merge folds an adapter into)."""
    from trl import get_quantization_config

    m = recipe.model
    kwargs: dict[str, Any] = dict(
        revision=m.model_revision,
        trust_remote_code=recipe.training.trust_remote_code,
        attn_implementation=m.attn_implementation,
        dtype=m.dtype or "float32",  # TRL's default too: float32 master weights under bf16 autocast
    )
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
    if run is not None and (run / "config.json").is_file():  # a full fine-tune or a scratch model saved whole
        return load_model(recipe, run, dequantize)
    model = load_model(recipe, models.resolve(recipe.model.model_name_or_path), dequantize)
    if run is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, run)
