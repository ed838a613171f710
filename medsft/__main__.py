"""Command line: `python -m medsft [train] RECIPE.yaml [--key value ...]`."""

from __future__ import annotations

import importlib
import os
import sys

from medsft.errors import ProcessLost, UserError

USAGE = """usage: python -m medsft [train] RECIPE.yaml [--key value ...]
       python -m medsft eval RUN_DIR_OR_RECIPE [--model_name_or_path X] [--output_dir D] [--key value ...]
       python -m medsft generate RUN_DIR_OR_MODEL "prompt" [--chat] [--max_new_tokens N --temperature T --top_k K --top_p P --seed S]
       python -m medsft generate RUN_DIR_OR_MODEL --question Q --context_file ABSTRACT.txt [--task pubmedqa]
       python -m medsft serve RUN_DIR_OR_MODEL [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--max_batch 8 ...]
       python -m medsft merge RUN_DIR OUT_DIR [--dtype D] [--device_map M] [--trust_remote_code]
       python -m medsft preview RECIPE.yaml [-n 5] [--key value ...]
       python -m medsft cv RECIPE.yaml [--folds K] [--key value ...]
       python -m medsft export RUN_DIR OUT.gguf [--type f16|bf16|q8_0] [--check N] [--modelfile] [--force]
       python -m medsft compare RUN_OR_EVAL_DIR RUN_OR_EVAL_DIR [...] [--json] [--seed S]
       python -m medsft audit RUN_DIR [--rows N] [--prefix K] [--suffix M] [--seed S] [--candidates C]
       python -m medsft deid INPUT OUTPUT [--mode surrogate|redact] [--seed S] [--fields a,b] [--patient_column C] [--force]

Fine-tunes the model a YAML recipe names on its task and data, with its trainer (sft, grpo, dpo, kto, orpo), from a
model or an earlier run's folder. Keys are the field names of the trainer's TRL config (SFTConfig, DPOConfig, ...)
and ModelConfig plus medsft's own (task, dataset_name, ...); --key value on the command line overrides the recipe.
Run under accelerate for several processes: accelerate launch -m medsft RECIPE.yaml
eval, generate, serve and merge run a model's own code only with --trust_remote_code on their command line."""


COMMANDS = ("cv", "preview", "train", "eval", "generate", "serve", "merge", "compare", "export", "deid", "audit")
MODULES = {"eval": "evaluate"}  # a command's module, where its name differs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    wants_help = "-h" in argv or "--help" in argv
    if argv[0] in ("generate", "serve") and wants_help:
        module = importlib.import_module(f"medsft.commands.{argv[0]}")
        module.parser().print_help()
        return 0
    if wants_help:
        _without_peft()
        from medsft.recipe.parser import RecipeParser

        print(USAGE + "\n\nEvery recipe key, with its default:")
        RecipeParser().parser.print_help()
        return 0
    command = argv.pop(0) if argv[0] in COMMANDS else "train"
    try:
        module = importlib.import_module(f"medsft.commands.{MODULES.get(command, command)}")
        return module.main(argv)
    except UserError as e:
        print(f"medsft: error: {e}", file=sys.stderr)
        return 2
    except ProcessLost as e:  # not the user's input: a process stuck, stopped or gone (run_state.json says so)
        print(f"medsft: error: {e}", file=sys.stderr)
        return 1
    finally:
        _leave_process_group()


def _without_peft() -> None:
    """For --help, which lists the keys of TRL's config classes and exits: transformers' TrainingArguments imports
    peft, and through it transformers' model code (2.5 s of 6 here), for the isinstance checks a Trainer makes on a
    PEFT model; this process builds none, so transformers is told peft is absent before it looks."""
    import transformers.utils

    transformers.utils.is_peft_available = lambda: False


def _leave_process_group() -> None:
    """Multi-process CPU runs aborted at exit ("terminate called without an active exception") when the gloo
    process group was left for interpreter shutdown to tear down."""
    if "torch" not in sys.modules:  # a command that never imported torch (preview of prepared data) has none
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
