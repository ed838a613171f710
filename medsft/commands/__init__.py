"""What the commands share: quiet libraries, the evaluation's datasets and header, plots, the quality gate."""

from __future__ import annotations

import os
import sys



def pop_int(argv: list[str], flag: str, example: str) -> tuple[int | None, list[str]]:
    """(the integer after `flag`, argv without the two), or (None, argv) when the flag is absent; one line when the
    value is missing or not an integer."""
    from medsft.errors import UserError

    if flag not in argv:
        return None, argv
    i = argv.index(flag)
    try:
        value = int(argv[i + 1])
    except (IndexError, ValueError):
        raise UserError(f"{flag} needs a number of {example}") from None
    return value, argv[:i] + argv[i + 2:]


def quiet_libraries() -> None:
    """The rich console is the interface: silence tqdm bars, per-log dict prints and deprecation noise."""
    import warnings

    import datasets
    import torch
    import transformers

    if not torch.cuda.is_available():  # the choice DeepSpeed makes itself, without its warning on every run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def idle_cores(num_processes: int) -> bool:
    """accelerate launch's default of one thread a process, on a CPU-only machine with cores to spare."""
    import torch

    launched = "ACCELERATE_MIXED_PRECISION" in os.environ
    spare = (os.cpu_count() or 1) // num_processes > 1
    return launched and not torch.cuda.is_available() and os.environ.get("OMP_NUM_THREADS") == "1" and spare


def evaluation_datasets(recipe, recorded, console, ids: bool = False):
    """The datasets an evaluation scores: the recipe's own test splits (a run's recorded ones), or with `suite` the
    suite's benchmarks, less the items the run trained or tuned on."""
    from medsft import data, mixture, suite

    if not recipe.script.suite:
        return data.load(mixture.specs(recipe.script, recipe.training), recorded)
    datasets = data.load(suite.specs(recipe.script.suite, recipe.script.suite_data, recipe.script.prompt_style))
    if ids and recorded is not None:  # rows of a run in memory: their ids
        recorded = {name: {role: [r["id"] for r in rows] for role, rows in parts.items()} for name, parts in recorded.items()}
    for name, n in suite.leave_out(datasets, recorded).items():
        if n:
            console.print(f"[yellow]{name}: {n} items left out: the run trained or tuned on them")
    return datasets


def run_info(recipe, datasets, steps: int | None, seconds: float | None, adapter: bool | None = None,
              run_dir=None) -> dict:
    """The header of eval_results.json and of the report: what produced the numbers, and how to reproduce them (the
    trained run's environment.json; for an evaluation alone, this machine's)."""
    from pathlib import Path

    from medsft import provenance

    return {
        "environment": (provenance.read(run_dir) if run_dir is not None else None) or provenance.record(recipe),
        "recipe": str(recipe.path),
        "model": recipe.model.model_name_or_path,
        "adapter": (Path(recipe.training.output_dir) / "adapter_config.json").is_file() if adapter is None else adapter,
        "datasets": {d.spec.name: {role: len(rows) for role, rows in d.parts.items()} for d in datasets},
        "steps": steps,
        "train_seconds": seconds,
    }


def write_plots(output_dir: str, log_history: list[dict], results: dict | None) -> None:
    from pathlib import Path

    from medsft import plots

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots.loss_curves(log_history, out / "loss_curves.png")
    choice = [e for e in (results or {}).get("evaluations", []) if "labels" in e]
    for i, evaluation in enumerate(choice):
        name = "tuned" if "tuned" in evaluation["models"] else "base"
        matrix = evaluation["models"][name]["confusion_matrix"]
        file = "confusion_matrix.png" if i == 0 else f"confusion_matrix_{evaluation['name']}.png"
        plots.confusion_matrix(matrix, evaluation["labels"], f"{evaluation['name']} ({name})", out / file)


def gate(recipe, eval_loss: float | None, results: dict | None, loss: bool = True) -> int:
    """Exit code 3 with one line when the recipe's quality gate is missed; everything is written already."""
    import dataclasses

    from medsft.metrics import quality_gate

    script = recipe.script if loss else dataclasses.replace(recipe.script, max_eval_loss=None)
    missed = quality_gate(script, eval_loss, results)
    if missed:
        print(f"medsft: quality gate missed: {'; '.join(missed)}", file=sys.stderr)
        return 3
    return 0
