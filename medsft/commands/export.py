"""`python -m medsft export RUN OUT.gguf [--type f16|bf16|q8_0] [--check N] [--modelfile] [--force]`: a run as one
GGUF file for llama.cpp, Ollama and LM Studio, read back and checked against the run before it ships."""

from __future__ import annotations

from pathlib import Path

from medsft.commands.common import pop_int, pop_option
from medsft.errors import UserError

USAGE = "usage: python -m medsft export RUN_DIR OUT.gguf [--type f16|bf16|q8_0] [--check N] [--modelfile] [--force]"


def _arguments(argv: list[str]):
    from medsft.models.gguf_export import TYPES

    flags = {f: f in argv for f in ("--modelfile", "--force", "--trust_remote_code")}
    argv = [a for a in argv if a not in flags]
    kind, argv = pop_option(argv, "--type")
    check, argv = pop_int(argv, "--check", "test items to score with both models, e.g. --check 200 (0: none)")
    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise UserError(USAGE)
    run, out = Path(argv[0]), Path(argv[1])
    if (kind or "f16") not in TYPES:
        raise UserError(f"--type {kind} is not a type medsft writes; choose {', '.join(TYPES)}")
    if out.suffix != ".gguf":
        raise UserError(f"OUT {out} must be a .gguf file")
    if out.exists() and not flags["--force"]:
        raise UserError(f"{out} exists; pass --force to replace it")
    return run, out, kind or "f16", 200 if check is None else check, flags


def main(argv: list[str]) -> int:
    """Load the run (a LoRA run folded into its base), write the GGUF file (all or nothing), read it back, compare,
    write the check's JSON beside it, say whether the file gives the run's answers."""
    import hashlib
    import json
    import os
    import time

    from medsft.console.quiet import quiet_libraries
    from medsft.data.datasets import load
    from medsft.data.templates import end_of_turn, kwargs_of
    from medsft.evaluation import export_check
    from medsft.models import gguf_export, gguf_vocab, inference, ollama
    from medsft.recipe import mixture
    from medsft.runs import records, run_folder

    run, out, kind, items, flags = _arguments(argv)
    folder = run_folder.folder_of(run) if run.is_dir() else None
    if folder is None:
        raise UserError(f"{run} holds no medsft run ({run_folder.RECIPE_FILE}); give a run folder or one of its checkpoints")
    quiet_libraries()
    start = time.perf_counter()
    loaded = inference.load(str(run), flags["--trust_remote_code"], dequantize=True, dtype="float32")
    model = loaded.model.merge_and_unload() if hasattr(loaded.model, "merge_and_unload") else loaded.model
    tokenizer, eot = loaded.tokenizer, end_of_turn(loaded.tokenizer)
    gguf_export.architecture(model)  # one line before anything is written, for an architecture it cannot write
    recipe = run_folder.parse_run(folder, [])
    provenance = {"run": str(folder.resolve()), "recipe_sha256": hashlib.sha256((folder / run_folder.RECIPE_FILE).read_bytes()).hexdigest(),
                  "chain": records.read_chain(folder) or [], "chat_template_kwargs": kwargs_of(tokenizer)}
    datasets = load(mixture.specs(recipe.script, recipe.training), records.read_ids(str(folder)))
    rendered = export_check.rendered(tokenizer, datasets[0], 16)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}")
    try:
        gguf_export.write(model, tokenizer, partial, kind, folder.name, provenance, eot, [t for t, _ in rendered])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)  # all or nothing: an interrupted export leaves no half-written file
    seconds = time.perf_counter() - start
    found = export_check.compare(model, export_check.read_back(out), tokenizer, datasets, rendered, loaded.max_length,
                                 items, recipe.training.seed)
    found.update({"file": str(out), "type": kind, "bytes": out.stat().st_size, "export_seconds": seconds})
    report = out.with_suffix(".check.json")
    report.write_text(json.dumps(found, indent=2))
    n, t = found["next_tokens"], found["tokens"]
    print(f"wrote {out} ({kind}, {out.stat().st_size / 2**20:.1f} MiB) in {seconds:.1f} s")
    print(f"the file's tokenizer gives the run's tokens on {t['same'] * 100:.1f}% of {t['texts']} texts"
          + ("" if t["same"] == 1.0 else f" (first differing text in {report.name})"))
    print(f"read back: largest next-token log-probability difference {n['max_logprob_difference']:.2g} over "
          f"{n['positions']} positions, most likely token the same at {n['top1_agreement'] * 100:.1f}%")
    for name, v in found.get("items", {}).items():
        print(f"{name}: {v['n']} test items, run {v['run_accuracy'] * 100:.1f}%, exported {v['exported_accuracy'] * 100:.1f}%, "
              f"same answer on {v['same_answer'] * 100:.1f}% (McNemar p {v['test']['p_value']:.2g})")
    same = export_check.same_answers(found, kind)
    print(("the exported model gives the run's answers" if same else "the exported model does NOT give the run's answers")
          + f"; details in {report}")
    note = gguf_export.context_note(model, loaded.max_length)
    if note:
        print(note)
    if provenance["chat_template_kwargs"]:
        print("llama.cpp: the run renders its chat template with keywords; serve it with llama-server --jinja "
              f"--chat-template-kwargs '{json.dumps(provenance['chat_template_kwargs'])}'")
    if flags["--modelfile"]:
        path, templated = ollama.modelfile(out, tokenizer, eot, gguf_vocab.adds_bos(tokenizer))
        print(f"Ollama: {path} (ollama create NAME -f Modelfile)" + ("" if templated else
              "; the chat template could not be written in Ollama's form: Ollama picks one by its likeness"))
    return 0
