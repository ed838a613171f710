"""`python -m medsft preview RECIPE`: the data exactly as training sees it."""

from __future__ import annotations

from medsft.commands import pop_int, quiet_libraries


def main(argv: list[str]) -> int:
    """`preview RECIPE [-n 5] [--key value]`: the data exactly as training would see it; trains and writes nothing."""
    import math

    from rich.console import Console

    from medsft import data, encode, report, train
    from medsft.config import parse_recipe

    n, argv = pop_int(argv, "-n", "examples, e.g. -n 5")
    n = 5 if n is None else n
    quiet_libraries()
    recipe = parse_recipe(argv)
    console = Console()
    with console.status("loading tokenizer and data"):
        prepared = train.prepare(recipe)
    dataset, tokenizer, args = prepared.train_dataset, prepared.tokenizer, recipe.training
    examples = []
    for row in dataset.select(range(min(n, len(dataset)))):
        pieces = [tokenizer.decode([t]) for t in row["input_ids"]]
        examples.append((pieces, [int(label != encode.IGNORE) for label in row["labels"]]))
    summary = data.summarize(dataset, prepared.stats["train"])
    steps = math.ceil(len(dataset) / (args.per_device_train_batch_size * args.gradient_accumulation_steps))
    report.preview(console, examples, summary, steps)
    return 0
