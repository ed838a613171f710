"""A trained run or a model, loaded for inference: the generate command and the server share this."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsft import checkpoints, loader, models
from medsft.arguments import DataSpec
from medsft.errors import UserError
from medsft.textfiles import read_text


@dataclass
class GenerateArguments:
    """Sampling settings of `medsft generate` (the names of transformers' GenerationConfig)."""

    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens to generate; EOS stops earlier."})
    temperature: float = field(default=0.7, metadata={"help": "0 for greedy decoding."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    seed: int = field(default=0, metadata={"help": "Sampling seed: the same seed gives the same text."})
    chat: bool = field(default=False, metadata={"help": "Send the prompt as a user turn through the chat template."})
    question: str | None = field(default=None, metadata={"help": "Answer this question with a choice task's scoring."})
    context_file: str | None = field(default=None, metadata={"help": "A text file the question is about (pubmedqa: the abstract)."})
    task: str | None = field(default=None, metadata={"help": "The choice task --question uses (default: the run's own)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model's own code (never taken from a run folder)."})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 5:
            raise UserError(f"temperature must be between 0 and 5, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"top_k must be 0 or more, got {self.top_k}")


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    name: str
    spec: DataSpec  # the run's first dataset (its task and prompt style), or the defaults for a plain model
    context: int | None  # longest sequence the model takes


def load(name: str, trust_remote_code: bool = False, dequantize: bool = False) -> Loaded:
    """A medsft run folder (loaded as its recipe trained it: dtype, attention, quantization, device; the adapter on
    top), an adapter folder, a model folder, a hub id or an embedded alias. `trust_remote_code` comes from the
    command line only; `dequantize`: a k-bit base in its compute dtype (for merge). One UserError line when it
    cannot be loaded."""
    from transformers import AutoModelForCausalLM

    path = Path(name).expanduser()
    spec = DataSpec()
    plain = dict(dtype="float32", trust_remote_code=trust_remote_code)
    device = loader.device()
    folder = checkpoints.run_folder(path) if path.is_dir() else None
    checkpoints.require_finished(path)
    try:
        if folder is not None:  # a run, or one of its checkpoints: loaded with the run's recipe
            from medsft import mixture, train
            from medsft.config import parse_run

            trust = ["--trust_remote_code", "true"] if trust_remote_code else []
            recipe = parse_run(folder, ["--output_dir", str(folder), *trust])
            if dequantize and loader.quantized(recipe):
                print(f"medsft: {path} was trained on a {'4' if recipe.model.load_in_4bit else '8'}-bit base; merging "
                      f"into that base dequantized to {recipe.model.dtype or 'float32'}", file=sys.stderr)
            model, tokenizer = train.load_trained(recipe, path, dequantize)
            spec = mixture.specs(recipe.script, recipe.training)[0]
        elif (path / "adapter_config.json").is_file():
            from peft import PeftModel

            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models.resolve(base), **plain), path).to(device)
            tokenizer = models.load_tokenizer(str(path) if (path / "tokenizer_config.json").is_file() else models.resolve(base),
                                              trust_remote_code=trust_remote_code)
        else:
            if path.exists() and not (path / "config.json").is_file():
                raise UserError(f"{path} holds no model: expected a medsft run, an adapter or a model folder")
            resolved = models.resolve(name)
            model = AutoModelForCausalLM.from_pretrained(resolved, **plain).to(device)
            tokenizer = models.load_tokenizer(resolved, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UserError(f"cannot load model {name}: {str(e).splitlines()[0]}") from None
    model.eval()
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return Loaded(model, tokenizer, name, spec, context)


def question_task(spec: DataSpec | str):
    """The choice task `generate --question` answers with: the run's own, or one named by --task."""
    from medsft import tasks

    if isinstance(spec, str):
        if spec not in tasks.TASKS:
            raise UserError(f"--task {spec} is not a task; tasks are {', '.join(tasks.NAMES)}")
        spec = DataSpec(task=spec)
    task = tasks.get(spec)
    if not task.choices:
        raise UserError(f"--question needs a choice task and {task.name} is not one; name one with --task (e.g. --task pubmedqa)")
    return task


def read_context(context_file: str | None) -> str:
    if context_file is None:
        return ""
    path = Path(context_file).expanduser()
    if not path.is_file():
        raise UserError(f"context_file not found: {path}")
    return read_text(path, "context_file").strip()
