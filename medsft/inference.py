"""A trained run or a model, loaded for inference: the generate command and the server share this."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medsft import models
from medsft.config import MedsftArguments
from medsft.errors import UserError


@dataclass
class GenerateArguments:
    """Sampling settings of `medsft generate` (the names of transformers' GenerationConfig)."""

    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens to generate; EOS stops earlier."})
    temperature: float = field(default=0.7, metadata={"help": "0 for greedy decoding."})
    top_k: int = field(default=50, metadata={"help": "Sample among the k most likely tokens (0: all)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    seed: int = field(default=0, metadata={"help": "Sampling seed: the same seed gives the same text."})
    task: Literal["text", "pubmedqa"] = field(default="text", metadata={"help": "pubmedqa: answer --question about --context_file."})
    question: str | None = field(default=None, metadata={"help": "pubmedqa: the question."})
    context_file: str | None = field(default=None, metadata={"help": "pubmedqa: a text file holding the abstract."})

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
    script: MedsftArguments  # the run's task settings (prompt style), or the defaults for a plain model
    context: int | None  # longest sequence the model takes


def load(name: str) -> Loaded:
    """A medsft run folder (base + adapter, or a full model), an adapter folder, a model folder, a hub id or an
    embedded alias. One UserError line when it cannot be loaded."""
    from transformers import AutoModelForCausalLM

    path = Path(name).expanduser()
    script = MedsftArguments()
    try:
        if (path / "recipe.yaml").is_file():
            from medsft import train
            from medsft.config import parse_recipe

            recipe = parse_recipe([str(path / "recipe.yaml"), "--output_dir", str(path)])
            model, tokenizer = train.load_trained(recipe)
            script = recipe.script
        elif (path / "adapter_config.json").is_file():
            from peft import PeftModel

            base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models.resolve(base), dtype="float32"), path)
            tokenizer = models.load_tokenizer(str(path) if (path / "tokenizer_config.json").is_file() else models.resolve(base))
        else:
            if path.exists() and not (path / "config.json").is_file():
                raise UserError(f"{path} holds no model: expected a medsft run, an adapter or a model folder")
            resolved = models.resolve(name)
            model = AutoModelForCausalLM.from_pretrained(resolved, dtype="float32")
            tokenizer = models.load_tokenizer(resolved)
    except OSError as e:
        raise UserError(f"cannot load model {name}: {str(e).splitlines()[0]}") from None
    model.eval()
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    return Loaded(model, tokenizer, name, script, context)


def pubmedqa_row(question: str, context_file: str) -> dict[str, Any]:
    path = Path(context_file).expanduser()
    if not path.is_file():
        raise UserError(f"context_file not found: {path}")
    return {"id": "cli", "question": question, "contexts": [path.read_text().strip()], "labels": [], "final_decision": None}
