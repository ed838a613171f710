"""What makes an evaluation's number comparable with another's, recorded beside it: the task and its options, the
items (a digest of the test ids), the tokenizer, the prompt as the model saw it (prompt style, chat, a digest of the
chat template and of every item's rendered prompt tokens, the template keywords), few-shot examples (medsft scores
zero-shot), the scoring and its generation settings, how choices were decided, max_length, the precision; and which
weights were scored (their digest), the one field two compared runs are expected to differ in. Each field says why a
difference in it makes two numbers incomparable (`why`), which `medsft compare` prints when it refuses them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from medsft.data.cache import tokenizer_digest
from medsft.data.prompts import prompt_ids
from medsft.evaluation.sharing import Track, no_track

IDENTITY = ("weights_sha256",)  # what the model is, not how it was scored
# Why a difference in each field makes two numbers incomparable: the sentence `medsft compare` refuses them with.
_PROMPT = "the models read different prompts, and a model's score depends on the prompt it reads"
_DECIDED = "the answers were decided differently, so the same scores can give different accuracies"
WHY = {
    "task": "they are different tasks",
    "labels": "the answers were chosen among different options",
    "items": "they scored different numbers of items",
    "test_ids_sha256": "they scored different items",
    "tokenizer_sha256": ("the text was split into different tokens, so each item is a different sequence: per-token "
                         "likelihoods and perplexities measure different things, and prompts are shortened at "
                         "different places"),
    "prompt_style": _PROMPT, "chat": _PROMPT, "chat_template_sha256": _PROMPT, "chat_template_kwargs": _PROMPT,
    "prompts_sha256": _PROMPT,
    "few_shot": "the models saw different examples before each item",
    "scoring": _DECIDED, "generation": _DECIDED, "decision": _DECIDED,
    "max_length": "long items were shortened at different lengths",
    "precision": "the models computed at different precisions",
}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def weights_digest(path: str | Path | None, track: Track = no_track) -> str | None:
    """sha256 over a folder's safetensors files (names and bytes, in name order, read a MiB at a time: `track`
    shows them pass); None where there is no folder."""
    if path is None or not Path(path).is_dir():
        return None
    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()

    def blocks():
        for file in files:
            h.update(file.name.encode())
            with file.open("rb") as f:
                yield from iter(lambda: f.read(1 << 20), b"")

    for block in track(blocks(), -(-sum(f.stat().st_size for f in files) // (1 << 20))):
        h.update(block)
    return h.hexdigest()


def _decision(spec, task) -> str | None:
    if not task.choices:
        return None
    if spec.calibration_file:
        return f"offsets from {spec.calibration_file}"
    return "offsets fitted on the dev split" if spec.calibrate else "argmax"


def record(dataset, settings, tokenizer, precision: str, weights: str | None, chat_template_kwargs) -> dict[str, Any]:
    """The evaluation's protocol, whole (eval_results.json keeps it under `protocol`)."""
    task, spec, rows = dataset.task, dataset.spec, dataset.parts["test"]
    examples = [e for e in (task.example(r) for r in rows) if e is not None]
    # what the model reads: a choice item's prompt as scoring renders it; any other item's whole text
    prompts = [prompt_ids(tokenizer, e.prompt if e.messages is None else e.messages[:-1]) if task.choices else e.flat()
               for e in examples]
    template = getattr(tokenizer, "chat_template", None)
    generation = settings.generation
    return {
        "task": task.name,
        "labels": task.labels() if task.choices else None,
        "items": len(rows),
        "test_ids_sha256": digest(sorted(r["id"] for r in rows)),
        "tokenizer_sha256": tokenizer_digest(tokenizer),
        "prompt_style": spec.prompt_style if "prompt_style" in task.options else None,
        "chat": spec.chat if "chat" in task.options else None,
        "chat_template_sha256": digest(template) if template else None,
        "chat_template_kwargs": chat_template_kwargs or None,
        "prompts_sha256": digest(prompts),
        "few_shot": 0,
        "scoring": settings.scoring if task.choices else "perplexity",
        "generation": {"max_new_tokens": generation.max_new_tokens, "num_samples": generation.num_samples,
                       "temperature": generation.temperature} if task.choices and settings.scoring == "generate" else None,
        "decision": _decision(spec, task),
        "max_length": settings.max_length,
        "precision": precision,
        "weights_sha256": weights,
    }


def short(protocol: dict[str, Any]) -> str:
    """One line for the report."""
    parts = [protocol["task"], f"{protocol['items']} items (ids {protocol['test_ids_sha256'][:8]})"]
    if protocol.get("prompt_style"):
        parts.append(f"prompt {protocol['prompt_style']}" + (", chat" if protocol.get("chat") else ""))
    parts.append(f"prompts {protocol['prompts_sha256'][:8]}")
    parts.append(protocol["scoring"] + (f" ({protocol['decision']})" if protocol.get("decision") else ""))
    parts += [f"max_length {protocol['max_length']}", protocol["precision"], "0-shot"]
    if protocol.get("weights_sha256"):
        parts.append(f"weights {protocol['weights_sha256'][:8]}")
    return ", ".join(str(p) for p in parts)


def shown(value: Any) -> str:
    """A field's value in a one-line message: a digest by its first 12 characters."""
    return f"{value[:12]}..." if isinstance(value, str) and len(value) == 64 else repr(value)


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first field, in the record's order, that two protocols differ in (the weights aside)."""
    for key in a:
        if key not in IDENTITY and a.get(key) != b.get(key):
            return key
    return next((key for key in b if key not in a and key not in IDENTITY), None)
