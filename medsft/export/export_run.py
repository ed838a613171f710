"""`medsft export`'s work, top to bottom: the run loaded in its weights' saved dtype (a LoRA run folded into its
base), written as GGUF a tensor at a time beside its destination and renamed into place (an interrupted or refused
export leaves nothing), then checked: the file's tokenizer against the run's always; with `items` (--check N, not 0)
the file read back as a model and compared with the run, the run's model first brought to the precision it is
scored in. What it found is returned, and written as JSON beside the file."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from medsft.data.datasets import load
from medsft.data.templates import end_of_turn, kwargs_of
from medsft.errors import UserError
from medsft.evaluation.sharing import no_track
from medsft.export import gguf_vocab, gguf_writer, ollama, read_back
from medsft.models import inference, loading
from medsft.recipe import mixture
from medsft.runs import records, run_folder

RENDERED_TEXTS = 16  # test texts whose tokens (and next tokens) are compared


def export(run: Path, out: Path, kind: str, items: int, modelfile: bool, trust_remote_code: bool = False,
           track_for=None, say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Write `run` as the GGUF file `out` and check it; `track_for(name, unit)` shows each part's progress, `say` each
    step as it starts."""
    track_for = track_for or (lambda name, unit="batches": no_track)
    folder = run_folder.folder_of(run) if run.is_dir() else None
    if folder is None:
        raise UserError(f"{run} holds no medsft run ({run_folder.RECIPE_FILE}); give a run folder or one of its checkpoints")
    say(f"loading {run} in its saved precision")
    loaded = inference.load(str(run), trust_remote_code, dequantize=True, dtype=loading.SAVED)
    model = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
    tokenizer, eot = loaded.tokenizer, end_of_turn(loaded.tokenizer)
    gguf_writer.architecture(model)  # one line before anything is written, for an architecture it cannot write
    recipe = run_folder.parse_run(folder, [])
    provenance = {"run": str(folder.resolve()), "chain": records.read_chain(folder) or [],
                  "recipe_sha256": hashlib.sha256((folder / run_folder.RECIPE_FILE).read_bytes()).hexdigest(),
                  "chat_template_kwargs": kwargs_of(tokenizer)}
    datasets = load(mixture.specs(recipe.script, recipe.training), records.read_ids(str(folder)))
    rendered = read_back.rendered(tokenizer, datasets[0], RENDERED_TEXTS)
    start = time.perf_counter()
    _written(model, tokenizer, out, kind, folder.name, provenance, eot, rendered, track_for("writing", "tensors"))
    seconds = time.perf_counter() - start
    if items:
        say("reading the file back and comparing it with the run")
        model = _as_scored(model)
        found = read_back.compare(model, read_back.read_back(out, model.device), tokenizer, datasets, rendered,
                                  loaded.max_length, items, recipe.training.seed, track_for)
    else:
        found = {"tokens": read_back.same_tokens(tokenizer, read_back.read_tokenizer(out), rendered)}
    same, why = read_back.verdict(found, kind)
    plain = bool(rendered) and all(special for _, special in rendered)  # every text a plain one: no chat template
    found.update({"file": str(out), "type": kind, "bytes": out.stat().st_size, "export_seconds": seconds,
                  "verdict": {"same": same, "why": why}, "context_note": gguf_writer.context_note(model, loaded.max_length),
                  "chat_template_kwargs": provenance["chat_template_kwargs"]})
    if modelfile:
        path, form = ollama.modelfile(out, tokenizer, eot, gguf_vocab.adds_bos(tokenizer), plain)
        found["modelfile"] = {"path": str(path), "template": form}
    report(out).write_text(json.dumps(found, indent=2))
    return found


def report(out: Path) -> Path:
    """Where the check's numbers go: beside the file."""
    return out.with_suffix(".check.json")


def _written(model, tokenizer, out: Path, kind: str, name: str, provenance: dict, eot, rendered, track) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    try:
        gguf_writer.write(model, tokenizer, partial, kind, name, provenance, eot, [t for t, _ in rendered], track)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)  # all or nothing: an interrupted export leaves no half-written file


def _as_scored(model):
    """The run's model in the precision medsft scores it in (float32 on the CPU; as loaded on a GPU), converted in
    place: weights saved in 16 bits are written before they are widened, so the writing never holds both."""
    import torch

    if model.device.type == "cpu" and model.dtype != torch.float32:
        model.float()
        gc.collect()
    return model.eval()
