"""`python -m medsft generate MODEL "prompt"`: stream a completion, or answer a question with a choice task."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medsft.commands.common import checked_dtype, json_mapping
from medsft.errors import OneLineErrors, UserError
from medsft.recipe.keys import DataSpec
from medsft.textfiles import read_text


@dataclass
class GenerateArguments:
    """Sampling settings of `medsft generate` (the names of transformers' GenerationConfig)."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens to generate; EOS stops earlier (the server's default)."})
    temperature: float = field(default=0.7, metadata={"help": "0 for greedy decoding."})
    top_k: int = field(default=0, metadata={"help": "Sample among the k most likely tokens (0: all, as the server)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    seed: int = field(default=0, metadata={"help": "Sampling seed: the same seed gives the same text (the server's too)."})
    presence_penalty: float = field(default=0.0, metadata={"help": "OpenAI's: lowers every token already generated (-2 to 2)."})
    frequency_penalty: float = field(default=0.0, metadata={"help": "OpenAI's: lowers a token per time it was generated (-2 to 2)."})
    chat: bool = field(default=False, metadata={"help": "Send the prompt as a user turn through the chat template."})
    question: str | None = field(default=None, metadata={"help": "Answer this question with a choice task's scoring."})
    context_file: str | None = field(default=None, metadata={"help": "A text file the question is about (pubmedqa: the abstract)."})
    task: str | None = field(default=None, metadata={"help": "The choice task --question uses (default: the run's own)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model's own code (never taken from a run folder)."})
    dtype: str | None = field(default=None, metadata={"help": "Load in auto, bfloat16, float16 or float32 (default: a run's own, else float32)."})
    device_map: str | None = field(default=None, metadata={"help": "Spread the model over this machine's GPUs (auto, balanced, ...)."})
    chat_template_kwargs: str | None = field(default=None, metadata={
        "help": "JSON keywords for the chat template, on top of a run's own (e.g. '{\"enable_thinking\": false}')."})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= 5:
            raise UserError(f"temperature must be between 0 and 5, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        for key in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, key) <= 2:
                raise UserError(f"{key} must be between -2 and 2, got {getattr(self, key)}")
        if self.top_k < 0:
            raise UserError(f"top_k must be 0 or more, got {self.top_k}")
        self.template_kwargs = json_mapping(self.chat_template_kwargs, "--chat_template_kwargs")
        checked_dtype(self.dtype)


def question_task(spec: DataSpec | str):
    """The choice task `generate --question` answers with: the run's own, or one named by --task."""
    from medsft import tasks

    if isinstance(spec, str):
        if spec not in tasks.TASKS:
            raise UserError(f"--task {spec} is not a task; tasks are {', '.join(tasks.NAMES)}")
        spec = DataSpec(task=spec)
    task = tasks.get(spec)
    if not task.choices:
        raise UserError(f"--question needs a choice task and {task.name} is not one; name one with --task (e.g. --task pubmedqa)")
    return task


def read_context(context_file: str | None) -> str:
    if context_file is None:
        return ""
    path = Path(context_file).expanduser()
    if not path.is_file():
        raise UserError(f"context_file not found: {path}")
    return read_text(path, "context_file").strip()


def parser():
    from transformers import HfArgumentParser

    class Parser(OneLineErrors, HfArgumentParser):
        pass

    return Parser(GenerateArguments, allow_abbrev=False, prog="medsft generate")


def _answer(gen: GenerateArguments, loaded, task) -> list[int] | None:
    """--question: the choice and each choice's probability printed; the ids to continue with the answer's
    explanation, where the task trains one (None otherwise). The prompt is shortened as the run's training shortened
    it (its max_length; a model's own context otherwise)."""
    import math

    from medsft.data import encoding
    from medsft.data.prompts import choice_spans
    from medsft.evaluation.scoring import score_choices

    task = task or question_task(loaded.spec)
    row = task.cli_row(gen.question, read_context(gen.context_file))
    room = loaded.max_length or loaded.context
    scores = score_choices(loaded.model, loaded.tokenizer, task, [row], room)[0]
    total = sum(math.exp(v) for v in scores["loglik"].values())
    print(f"answer: {scores['prediction']}")
    for choice, value in scores["loglik"].items():
        print(f"  p({choice}) = {math.exp(value) / total:.3f}")
    if not task.continues():
        return None
    chosen = task.row_labels(row).index(scores["prediction"])
    span = choice_spans(encoding.Encoder(loaded.tokenizer, room), task, row)[chosen]
    return span.ids[: span.stop]  # the explanation follows the answer, as training trained it


def _prompt_ids(name: str, prompt: str | None, chat: bool, tokenizer) -> list[int]:
    """The prompt's ids as training renders it (`--chat`: as the user's turn of a conversation)."""
    from medsft.data.prompts import prompt_ids

    if prompt is None:
        raise UserError('generate needs a prompt: python -m medsft generate RUN_DIR_OR_MODEL "prompt"')
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UserError(f"--chat needs a chat template and {name} has none")
    return prompt_ids(tokenizer, [{"role": "user", "content": prompt}] if chat else prompt)


def main(argv: list[str]) -> int:
    """`generate MODEL "prompt" [--key value]`: stream a completion (`--chat`: as a user turn, rendered with the chat
    template as training renders it); `--question` answers with the run's choice task and its probabilities."""
    from rich.console import Console

    from medsft.console.quiet import quiet_libraries
    from medsft.generation.completion import generate
    from medsft.models import inference

    positional = [a for a in argv[:2] if not a.startswith("--")]
    if not positional:
        raise UserError('usage: python -m medsft generate RUN_DIR_OR_MODEL "prompt" [--chat --max_new_tokens N --temperature T '
                        "--top_k K --top_p P --seed S] (or --question Q --context_file FILE)")
    name, prompt = positional[0], (positional[1] if len(positional) > 1 else None)
    gen, rest = parser().parse_args_into_dataclasses(argv[len(positional):], return_remaining_strings=True)
    if rest:
        raise UserError(f"unrecognized arguments: {' '.join(rest)}; see python -m medsft generate --help")
    task = question_task(gen.task) if gen.question is not None and gen.task else None
    quiet_libraries()
    with Console(stderr=True).status(f"loading {name}"):
        loaded = inference.load(name, gen.trust_remote_code, chat_template_kwargs=gen.template_kwargs, dtype=gen.dtype,
                                device_map=gen.device_map)
    tokenizer = loaded.tokenizer
    ids = _answer(gen, loaded, task) if gen.question is not None else _prompt_ids(name, prompt, gen.chat, tokenizer)
    if ids is None:
        return 0
    if loaded.context is not None and len(ids) + gen.max_new_tokens > loaded.context:
        raise UserError(f"prompt plus max_new_tokens exceed the model's context of {loaded.context} tokens")
    generate(loaded.model, tokenizer, [ids], gen.max_new_tokens, gen.temperature, gen.top_p, gen.seed, top_k=gen.top_k,
             on_text=lambda text: print(text, end="", flush=True), presence_penalty=gen.presence_penalty,
             frequency_penalty=gen.frequency_penalty)
    print(flush=True)
    return 0
