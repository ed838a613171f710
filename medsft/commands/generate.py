"""`python -m medsft generate MODEL "prompt"`: stream a completion, or answer a question with a choice task."""

from __future__ import annotations

from medsft.commands import quiet_libraries
from medsft.errors import OneLineErrors, UserError


def parser():
    from transformers import HfArgumentParser

    from medsft.inference import GenerateArguments

    class Parser(OneLineErrors, HfArgumentParser):
        pass

    return Parser(GenerateArguments, allow_abbrev=False, prog="medsft generate")


def main(argv: list[str]) -> int:
    """`generate MODEL "prompt" [--key value]`: stream a completion (`--chat`: as a user turn, rendered with the chat
    template as training renders it); `--question` answers with the run's choice task and its probabilities."""
    import math

    import torch
    from rich.console import Console
    from transformers import TextStreamer

    from medsft import encode, evaluate, inference
    from medsft.generate import generate

    positional = [a for a in argv[:2] if not a.startswith("--")]
    if not positional:
        raise UserError('usage: python -m medsft generate RUN_DIR_OR_MODEL "prompt" [--chat --max_new_tokens N --temperature T '
                        "--top_k K --top_p P --seed S] (or --question Q --context_file FILE)")
    name, prompt = positional[0], (positional[1] if len(positional) > 1 else None)
    gen, rest = parser().parse_args_into_dataclasses(argv[len(positional):], return_remaining_strings=True)
    if rest:
        raise UserError(f"unrecognized arguments: {' '.join(rest)}; see python -m medsft generate --help")
    task = inference.question_task(gen.task) if gen.question is not None and gen.task else None
    quiet_libraries()
    console = Console(stderr=True)
    with console.status(f"loading {name}"):
        loaded = inference.load(name, gen.trust_remote_code)
    model, tokenizer = loaded.model, loaded.tokenizer
    if gen.question is not None:
        task = task or inference.question_task(loaded.spec)
        row = task.cli_row(gen.question, inference.read_context(gen.context_file))
        scores = evaluate.score_choices(model, tokenizer, task, [row], loaded.context)[0]
        total = sum(math.exp(v) for v in scores["loglik"].values())
        print(f"answer: {scores['prediction']}")
        for choice, value in scores["loglik"].items():
            print(f"  p({choice}) = {math.exp(value) / total:.3f}")
        if not task.continues():
            return 0
        answer = tokenizer(task.continuation(scores["prediction"]), add_special_tokens=False)["input_ids"]
        prompt = encode.prompt_ids(tokenizer, task.example(row).prompt) + answer  # the explanation follows the answer
    elif prompt is None:
        raise UserError('generate needs a prompt: python -m medsft generate RUN_DIR_OR_MODEL "prompt"')
    elif gen.chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"--chat needs a chat template and {name} has none")
        prompt = encode.chat_ids(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    ids = tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else prompt
    if loaded.context is not None and len(ids) + gen.max_new_tokens > loaded.context:
        raise UserError(f"prompt plus max_new_tokens exceed the model's context of {loaded.context} tokens")
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.inference_mode():
        generate(model, tokenizer, [prompt], gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed,
                 top_k=gen.top_k, streamer=streamer)
    return 0
