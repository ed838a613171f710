"""`python -m medsft audit RUN [--rows N] [--prefix K] [--suffix M] [--seed S] [--candidates C]`: what the run's
model gives back of its training rows (extraction, membership inference, canaries' exposure), written to
RUN/audit.json."""

from __future__ import annotations

from pathlib import Path

from medsft.commands.common import pop_int
from medsft.errors import UserError

USAGE = "usage: python -m medsft audit RUN_DIR [--rows N] [--prefix K] [--suffix M] [--seed S] [--candidates C]"


def _arguments(argv: list[str]) -> tuple[Path, dict]:
    from medsft.evaluation import audit_run as audit, exposure

    given = {}
    for flag, default, what in (("--rows", audit.ROWS, "rows of each kind, e.g. --rows 1000"),
                                ("--prefix", audit.PREFIX, "prefix tokens, e.g. --prefix 32"),
                                ("--suffix", audit.SUFFIX, "tokens compared, e.g. --suffix 32"),
                                ("--seed", 0, "the sample's seed, e.g. --seed 0"),
                                ("--candidates", exposure.CANDIDATES, "candidates per canary, e.g. --candidates 2000")):
        value, argv = pop_int(argv, flag, what)
        value = default if value is None else value
        if value < (0 if flag == "--seed" else 1):
            raise UserError(f"{flag} must be at least {0 if flag == '--seed' else 1}, got {value}")
        given[flag.lstrip("-")] = value
    if len(argv) != 1 or argv[0].startswith("-"):
        raise UserError(USAGE)
    return Path(argv[0]), given


def main(argv: list[str]) -> int:
    from rich.console import Console

    from medsft.console import audit_report
    from medsft.console.progress import eval_progress
    from medsft.console.quiet import quiet_libraries
    from medsft.evaluation.audit_run import audit
    from medsft.models import inference
    from medsft.runs import records, run_folder

    run, given = _arguments(argv)
    folder = run_folder.folder_of(run) if run.is_dir() else None
    if folder is None:
        raise UserError(f"{run} holds no medsft run ({run_folder.RECIPE_FILE}); give a run folder or one of its checkpoints")
    quiet_libraries()
    console = Console(soft_wrap=True)
    with console.status("loading the run"):
        loaded = inference.load(str(run))
        recipe, datasets, planted, digits = run_folder.audited(folder)
    with eval_progress(console) as track_for:
        found = audit(recipe, loaded.model, loaded.tokenizer, datasets, planted, digits, given["rows"], given["prefix"],
                      given["suffix"], given["seed"], given["candidates"], track_for)
    audit_report.report(console, found, records.write_audit(folder, found))
    return 0
