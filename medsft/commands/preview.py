"""`python -m medsft preview RECIPE`: the data exactly as training sees it."""

from __future__ import annotations

from medsft.commands.common import pop_int


def main(argv: list[str]) -> int:
    """`preview RECIPE [-n 5] [--key value]`: the data exactly as training would see it; trains and writes nothing."""
    from rich.console import Console

    from medsft.console import contamination_report, deid_report, training_tables
    from medsft.console.progress import eval_progress
    from medsft.console.quiet import quiet_libraries
    from medsft.data import recipe_cache
    from medsft.evaluation import contamination
    from medsft.training import catalog
    from medsft.training.prepare import prepare

    n, argv = pop_int(argv, "-n", "examples, e.g. -n 5")
    n = 5 if n is None else n
    quiet_libraries(models=False)
    recipe = recipe_cache.parse(argv)  # a recipe previewed before is read back: no training classes imported
    console = Console()
    with console.status("loading tokenizer and data"):
        prepared = prepare(recipe)
    training_tables.preview(console, catalog.get(recipe.script.trainer).preview(prepared, recipe.training, n))
    deid_report.report(console, {d.spec.name: d.deidentified for d in prepared.datasets if d.deidentified})
    scored = [d for d in prepared.datasets if d.parts["test"]]
    with eval_progress(console, transient=True) as track_for:  # a bar only while the check is computed
        found = contamination.check(scored, contamination.trained_on(recipe, prepared.datasets), recipe.script,
                                    track_for("contamination check", "training rows"))
    contamination_report.before_training(console, found, {d.spec.name: len(d.parts["test"]) for d in scored}, prepared.removed)
    return 0
