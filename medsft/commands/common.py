"""What the commands share: their integer options, and the exit code of the recipe's quality gate."""

from __future__ import annotations

import sys

from medsft.errors import UserError


def pop_int(argv: list[str], flag: str, example: str) -> tuple[int | None, list[str]]:
    """(the integer after `flag`, argv without the two), or (None, argv) when the flag is absent; one line when the
    value is missing or not an integer."""
    if flag not in argv:
        return None, argv
    i = argv.index(flag)
    try:
        value = int(argv[i + 1])
    except (IndexError, ValueError):
        raise UserError(f"{flag} needs a number of {example}") from None
    return value, argv[:i] + argv[i + 2:]


def pop_option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """(the value after `flag`, argv without the two), or (None, argv) when the flag is absent."""
    if flag not in argv:
        return None, argv
    i = argv.index(flag)
    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
        raise UserError(f"{flag} needs a value")
    return argv[i + 1], argv[:i] + argv[i + 2:]


def gate(recipe, eval_loss: float | None, results: dict | None, loss: bool = True) -> int:
    """Exit code 3 with one line when the recipe's quality gate is missed; everything is written already."""
    import dataclasses

    from medsft.evaluation.metrics import quality_gate

    script = recipe.script if loss else dataclasses.replace(recipe.script, max_eval_loss=None)
    missed = quality_gate(script, eval_loss, results)
    if missed:
        print(f"medsft: quality gate missed: {'; '.join(missed)}", file=sys.stderr)
        return 3
    return 0


def json_mapping(text: str | None, what: str) -> dict | None:
    """A JSON object given on the command line; one line when it is not one."""
    from medsft.textfiles import parse_json

    return None if text is None else parse_json(text, f"{what} (a JSON object, e.g. '{{\"enable_thinking\": false}}')", dict)


DTYPES = ("auto", "bfloat16", "float16", "float32")


def checked_dtype(dtype: str | None) -> str | None:
    """A dtype a model loads in (auto: the checkpoint's own on a GPU, float32 on the CPU); one line otherwise."""
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    return dtype
