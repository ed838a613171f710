"""`python -m medsft export RUN OUT.gguf [--type f16|bf16|q8_0] [--check N] [--modelfile] [--force]`: a run as one
GGUF file for llama.cpp, Ollama and LM Studio, read back and checked against the run before it ships."""

from __future__ import annotations

from pathlib import Path

from medsft.commands.common import pop_int, pop_option
from medsft.errors import UserError

USAGE = "usage: python -m medsft export RUN_DIR OUT.gguf [--type f16|bf16|q8_0] [--check N] [--modelfile] [--force]"


def _arguments(argv: list[str]):
    from medsft.export import ollama
    from medsft.export.gguf_writer import TYPES

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
    taken = [p for p in (out, ollama.path_beside(out) if flags["--modelfile"] else None) if p is not None and p.exists()]
    if taken and not flags["--force"]:
        raise UserError(f"{taken[0]} exists; pass --force to replace it")
    return run, out, kind or "f16", 200 if check is None else check, flags


def main(argv: list[str]) -> int:
    """Export the run (export/export_run.py) with its progress shown, then say what the check found."""
    from rich.console import Console

    from medsft.console import export_report
    from medsft.console.progress import eval_progress
    from medsft.console.quiet import quiet_libraries
    from medsft.export import export_run

    run, out, kind, items, flags = _arguments(argv)
    quiet_libraries()
    console = Console(soft_wrap=True)  # paths and commands printed whole, to be copied
    with eval_progress(console) as track_for:
        found = export_run.export(run, out, kind, items, flags["--modelfile"], flags["--trust_remote_code"], track_for,
                                  say=lambda text: console.print(f"[dim]{text}[/]"))
    export_report.report(console, found, export_run.report(out))
    return 0
