"""`python -m medsft preview RECIPE`: the data exactly as training sees it."""

from __future__ import annotations

from medsft.commands.common import pop_int


def main(argv: list[str]) -> int:
    """`preview RECIPE [-n 5] [--key value]`: the data exactly as training would see it; trains and writes nothing."""
    import math

    from rich.console import Console

    from medsft.console import training_tables
    from medsft.console.quiet import quiet_libraries
    from medsft.data import datasets, encoding
    from medsft.recipe.parser import parse_recipe
    from medsft.training.prepare import prepare

    n, argv = pop_int(argv, "-n", "examples, e.g. -n 5")
    n = 5 if n is None else n
    quiet_libraries()
    recipe = parse_recipe(argv)
    console = Console()
    with console.status("loading tokenizer and data"):
        prepared = prepare(recipe)
    dataset, tokenizer, args = prepared.train_dataset, prepared.tokenizer, recipe.training
    if recipe.script.trainer == "grpo":  # prompts the replies are generated after: nothing of them is trained
        from medsft.training import grpo

        shown = [[tokenizer.decode([t]) for t in ids] for ids in grpo.prompt_ids_of(prepared, dataset[:n])]
        lengths = sorted(len(ids) for ids in grpo.prompt_ids_of(prepared, dataset))
        steps = math.ceil(len(dataset) * args.num_generations / (args.per_device_train_batch_size * args.gradient_accumulation_steps))
        training_tables.prompts_preview(console, shown, lengths, steps, args.num_generations)
        return 0
    examples = []
    for row in dataset.select(range(min(n, len(dataset)))):
        pieces = [tokenizer.decode([t]) for t in row["input_ids"]]
        examples.append((pieces, [int(label != encoding.IGNORE) for label in row["labels"]]))
    summary = datasets.summarize(prepared.stats["train"])
    steps = math.ceil(len(dataset) / (args.per_device_train_batch_size * args.gradient_accumulation_steps))
    training_tables.preview(console, examples, summary, steps)
    return 0
