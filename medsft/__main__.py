"""Command line: `python -m medsft [train] RECIPE.yaml [--key value ...]`."""

from __future__ import annotations

import os
import sys

from medsft.errors import OneLineErrors, UserError

USAGE = """usage: python -m medsft [train] RECIPE.yaml [--key value ...]
       python -m medsft eval RUN_DIR_OR_RECIPE [--model_name_or_path X] [--key value ...]
       python -m medsft generate RUN_DIR_OR_MODEL "prompt" [--chat] [--max_new_tokens N --temperature T --top_k K --top_p P --seed S]
       python -m medsft generate RUN_DIR_OR_MODEL --question Q --context_file ABSTRACT.txt [--task pubmedqa]
       python -m medsft serve RUN_DIR_OR_MODEL [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--max_batch 8 ...]
       python -m medsft merge RUN_DIR OUT_DIR
       python -m medsft preview RECIPE.yaml [-n 5] [--key value ...]
       python -m medsft cv RECIPE.yaml [--folds K] [--key value ...]

Fine-tunes the model a YAML recipe names on its task and data. Keys are the field names of TRL's SFTConfig and
ModelConfig plus medsft's own (task, dataset_name, ...); --key value on the command line overrides the recipe.
Run under accelerate for several processes: accelerate launch -m medsft RECIPE.yaml"""


def _quiet_libraries() -> None:
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


def _idle_cores(num_processes: int) -> bool:
    """accelerate launch's default of one thread a process, on a CPU-only machine with cores to spare."""
    import torch

    launched = "ACCELERATE_MIXED_PRECISION" in os.environ
    spare = (os.cpu_count() or 1) // num_processes > 1
    return launched and not torch.cuda.is_available() and os.environ.get("OMP_NUM_THREADS") == "1" and spare


def train_main(argv: list[str]) -> int:
    from accelerate import PartialState
    from rich.console import Console

    from medsft import report, tracking, train
    from medsft.config import parse_recipe
    from medsft.progress import RichProgress, eval_progress

    _quiet_libraries()
    recipe = parse_recipe(argv)
    train.check_output_dir(recipe)
    state = PartialState()
    if recipe.training.deepspeed and state.num_processes > 1:
        import deepspeed  # a recipe's ZeRO-3 shards the weights while they load, asking DeepSpeed's process group

        deepspeed.init_distributed(dist_backend=state.backend)  # for the world size: join it to the one we have
    console = Console(quiet=not state.is_main_process)
    if _idle_cores(state.num_processes):
        console.print(
            f"[yellow]accelerate launch set OMP_NUM_THREADS=1: training uses 1 of {os.cpu_count()} cores; "
            f"add --num_cpu_threads_per_process {os.cpu_count() // state.num_processes} (or use ./launch.sh)"
        )

    with console.status("loading model and data"):
        prepared = train.prepare(recipe)
    report.data_summary(console, prepared.stats, recipe.training.max_length)

    recipe.training.disable_tqdm = True  # the rich bar below replaces tqdm
    tracked = tracking.enabled(recipe) and state.is_main_process
    if tracked:
        tracking.start(recipe)
    trainer, result = train.train(recipe, prepared, callbacks=[RichProgress(console)])
    report.train_summary(console, result, recipe.model.model_name_or_path)
    if result.stopped_by is not None:
        import signal

        name = signal.Signals(result.stopped_by).name
        console.print(f"[yellow]stopped by {name} after step {result.steps}; checkpoint saved in {recipe.training.output_dir}: "
                      "resume with --resume_from_checkpoint true")
        if tracked:
            tracking.finish(None, None, recipe.training.output_dir)
        return 128 + result.stopped_by
    results = None
    evaluated = prepared.datasets
    if recipe.script.suite:
        evaluated = evaluation_datasets(recipe, {d.spec.name: d.parts for d in prepared.datasets}, console, ids=True)
    if recipe.script.eval_after_train and any(d.parts["test"] for d in evaluated):
        run = _run_info(recipe, prepared.datasets, result.steps, result.seconds, run_dir=recipe.training.output_dir)
        out = recipe.training.output_dir if state.is_main_process else None
        with eval_progress(console) as track_for:
            model = trainer.accelerator.unwrap_model(trainer.model)
            results = train.evaluate_run(recipe, model, prepared.tokenizer, evaluated, out, run, track_for)
        report.eval_report(console, results)
    if state.is_main_process:
        _write_plots(recipe.training.output_dir, result.log_history, results)
    if tracked:
        tracking.finish(results, result.eval_loss, recipe.training.output_dir)
    return _gate(recipe, result.eval_loss, results)


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


def _run_info(recipe, datasets, steps: int | None, seconds: float | None, adapter: bool | None = None,
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


def _write_plots(output_dir: str, log_history: list[dict], results: dict | None) -> None:
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


def _gate(recipe, eval_loss: float | None, results: dict | None, loss: bool = True) -> int:
    """Exit code 3 with one line when the recipe's quality gate is missed; everything is written already."""
    import dataclasses

    from medsft.metrics import quality_gate

    script = recipe.script if loss else dataclasses.replace(recipe.script, max_eval_loss=None)
    missed = quality_gate(script, eval_loss, results)
    if missed:
        print(f"medsft: quality gate missed: {'; '.join(missed)}", file=sys.stderr)
        return 3
    return 0


def eval_main(argv: list[str]) -> int:
    """`eval RUN_DIR` or `eval RECIPE`: the trained run (base vs tuned on the test ids it recorded) or, without one
    for this model and data, the base model alone, written to a folder of its own."""
    from pathlib import Path

    import yaml
    from accelerate import PartialState
    from rich.console import Console

    from medsft import report, splits, train
    from medsft.config import parse_recipe
    from medsft.progress import eval_progress

    _quiet_libraries()
    if argv and Path(argv[0]).is_dir():
        if not (Path(argv[0]) / train.RECIPE_FILE).is_file():
            raise UserError(f"{argv[0]} holds no medsft run (recipe.yaml); give a run folder or a recipe")
        argv = [str(Path(argv[0]) / train.RECIPE_FILE), *argv[1:], "--output_dir", argv[0]]
    recipe = parse_recipe(argv)
    state = PartialState()
    console = Console(quiet=not state.is_main_process)
    run_dir = train.trained_run(recipe)
    out = run_dir or train.eval_dir(recipe)
    if run_dir is not None:
        from medsft import provenance

        changed = provenance.mismatch(provenance.read(run_dir))
        if changed:
            console.print(f"[yellow]medsft: warning: {changed}")
    saved = splits.read_ids(str(run_dir)) if run_dir else None
    datasets = evaluation_datasets(recipe, saved, console)
    with console.status("loading model"):
        model, tokenizer = train.load_trained(recipe, run_dir)
    steps, seconds = train.saved_run_time(str(run_dir)) if run_dir else (None, None)
    run = _run_info(recipe, datasets, steps, seconds, adapter=bool(run_dir and (run_dir / "adapter_config.json").is_file()),
                    run_dir=run_dir)
    main = state.is_main_process
    if main and run_dir is None:
        out.mkdir(parents=True, exist_ok=True)
        (out / train.EVAL_FILE).write_text(yaml.safe_dump(recipe.resolved(), sort_keys=False))
        splits.write_ids(str(out), {d.spec.name: d.parts for d in datasets})
    with eval_progress(console) as track_for:
        results = train.evaluate_run(recipe, model, tokenizer, datasets, str(out) if main else None, run, track_for,
                                     trained=run_dir is not None)
    report.eval_report(console, results)
    if main:
        _write_plots(str(out), [], results)
    console.print(f"written to {out}: eval_results.json, predictions.jsonl")
    return _gate(recipe, None, results, loss=False)  # no training here: only the accuracy threshold applies


def _generate_parser():
    from transformers import HfArgumentParser

    from medsft.inference import GenerateArguments

    class Parser(OneLineErrors, HfArgumentParser):
        pass

    return Parser(GenerateArguments, allow_abbrev=False, prog="medsft generate")


def generate_main(argv: list[str]) -> int:
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
    gen, rest = _generate_parser().parse_args_into_dataclasses(argv[len(positional):], return_remaining_strings=True)
    if rest:
        raise UserError(f"unrecognized arguments: {' '.join(rest)}; see python -m medsft generate --help")
    task = inference.question_task(gen.task) if gen.question is not None and gen.task else None
    _quiet_libraries()
    console = Console(stderr=True)
    with console.status(f"loading {name}"):
        loaded = inference.load(name)
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
        prompt = task.example(row).prompt + task.continuation(scores["prediction"])
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


def serve_main(argv: list[str]) -> int:
    """`serve RUN_DIR_OR_MODEL [--host 127.0.0.1] [--port 8000] [--api_key KEY] [limits]`."""
    import argparse
    import ipaddress

    from medsft.server import ServeOptions

    class Parser(OneLineErrors, argparse.ArgumentParser):
        pass

    def positive(kind):
        def parse(text):
            value = kind(text)
            if value <= 0:
                raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
            return value
        return parse

    defaults = ServeOptions()
    parser = Parser(prog="medsft serve", allow_abbrev=False)
    parser.add_argument("model", help="a medsft run, an adapter or model folder, a hub id or smollm2-135m-instruct")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api_key", default=os.environ.get("MEDSFT_API_KEY"),
                        help="require Authorization: Bearer KEY on every endpoint but /health and / (or MEDSFT_API_KEY)")
    parser.add_argument("--max_tokens_cap", type=positive(int), default=defaults.max_tokens_cap, help="largest max_tokens a request may ask for")
    parser.add_argument("--max_batch", type=positive(int), default=defaults.max_batch, help="requests decoded together (1: one at a time)")
    parser.add_argument("--max_queue", type=positive(int), default=defaults.max_queue, help="requests that may wait; more get 429")
    parser.add_argument("--max_body_bytes", type=positive(int), default=defaults.max_body_bytes, help="larger bodies get 413")
    parser.add_argument("--max_prompt_tokens", type=positive(int), default=None, help="longest prompt (default: the model's context)")
    parser.add_argument("--timeout", type=positive(float), default=defaults.timeout, help="seconds a request may wait and generate")
    args = parser.parse_args(argv)
    _quiet_libraries()
    import uvicorn

    from medsft import inference, server

    options = ServeOptions(args.max_tokens_cap, args.max_batch, args.max_queue, args.max_body_bytes, args.max_prompt_tokens,
                           args.timeout, args.api_key or None)
    app = server.create_app(inference.load(args.model), options)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and options.api_key is None:
        print(f"medsft: warning: serving on {args.host} without an API key: anyone who can reach it can use it "
              "(set --api_key or MEDSFT_API_KEY)", file=sys.stderr, flush=True)
    print(f"medsft: serving {args.model} on http://{args.host}:{args.port} (OpenAI API under /v1)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def merge_main(argv: list[str]) -> int:
    """`merge RUN_DIR OUT_DIR`: the adapter folded into the base weights, saved as a plain model + tokenizer."""
    import tempfile
    from pathlib import Path

    from medsft import inference

    if len(argv) != 2 or any(a.startswith("-") for a in argv):
        raise UserError("usage: python -m medsft merge RUN_DIR OUT_DIR")
    run, out = Path(argv[0]), Path(argv[1])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"OUT_DIR {out} is not empty; merge writes into a new or empty folder and overwrites nothing")
    if not (run / "adapter_config.json").is_file():
        raise UserError(f"{run} holds no LoRA adapter (adapter_config.json): nothing to merge")
    _quiet_libraries()
    loaded = inference.load(str(run))
    model = loaded.model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    loaded.tokenizer.save_pretrained(tmp)
    if out.exists():
        out.rmdir()  # empty, checked above
    tmp.rename(out)  # all or nothing: an interrupted merge leaves no half-written OUT_DIR
    print(f"merged {run} into {out}: loads with AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


def preview_main(argv: list[str]) -> int:
    """`preview RECIPE [-n 5] [--key value]`: the data exactly as training would see it; trains and writes nothing."""
    import math

    from rich.console import Console

    from medsft import data, encode, report, train
    from medsft.config import parse_recipe

    n = 5
    if "-n" in argv:
        i = argv.index("-n")
        try:
            n = int(argv[i + 1])
        except (IndexError, ValueError):
            raise UserError("-n needs a number of examples, e.g. -n 5") from None
        argv = argv[:i] + argv[i + 2:]
    _quiet_libraries()
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


def cv_main(argv: list[str]) -> int:
    """`cv RECIPE [--folds K] [--key value]`: train on all folds but one, score that fold, for the first K folds;
    report mean and spread of dev accuracy and macro-F1 and write the out-of-fold offsets (cv_results.json)."""
    from pathlib import Path

    from accelerate import PartialState
    from rich.console import Console

    from medsft import cv, data, evaluate, mixture, report, train
    from medsft.config import parse_recipe
    from medsft.progress import RichProgress

    folds = None
    if "--folds" in argv:
        i = argv.index("--folds")
        try:
            folds = int(argv[i + 1])
        except (IndexError, ValueError):
            raise UserError("--folds needs a number of folds, e.g. --folds 10") from None
        argv = argv[:i] + argv[i + 2:]
    _quiet_libraries()
    recipe = parse_recipe(argv)
    console = Console(quiet=not PartialState().is_main_process)
    datasets = data.load(mixture.specs(recipe.script, recipe.training))
    if len(datasets) != 1:
        raise UserError("cv runs on one dataset; a dataset_mixture has several")
    available = cv.folds_of(datasets[0])
    folds = available if folds is None else folds
    if not 1 <= folds <= available:
        raise UserError(f"--folds must be between 1 and {available}, got {folds}")
    out = Path(recipe.training.output_dir + "-cv")
    args = recipe.training
    settings = evaluate.Settings(args.max_length, args.per_device_eval_batch_size, args.seed, num_samples=0)
    fold_predictions, base_predictions = [], []
    for fold in range(folds):
        fold_recipe = parse_recipe([*argv, "--fold", str(fold), "--output_dir", str(out / f"fold-{fold}"),
                                    "--eval_after_train", "false", "--overwrite_output_dir", "true"])
        recipe.training.disable_tqdm = fold_recipe.training.disable_tqdm = True
        prepared = train.prepare(fold_recipe)
        trainer, _ = train.train(fold_recipe, prepared, callbacks=[RichProgress(console)])
        model, dataset = trainer.accelerator.unwrap_model(trainer.model), prepared.datasets[0]
        model.eval()
        fold_predictions.append(cv.score(model, prepared.tokenizer, dataset.task, dataset.parts["eval"], settings))
        base = train.base_of(fold_recipe, model)
        if base is not None or hasattr(model, "disable_adapter"):
            with (model.disable_adapter() if base is None else _nothing()):
                base_predictions += cv.score(base or model, prepared.tokenizer, dataset.task, dataset.parts["eval"], settings)
        last = fold_predictions[-1]
        console.print(f"fold {fold}: dev accuracy {sum(p['prediction'] == p['gold'] for p in last) / max(len(last), 1):.3f} "
                      f"on {len(last)} items")
    results = cv.summarize(dataset.task, fold_predictions, base_predictions, args.seed)
    results["recipe"], results["folds_used"], results["folds_available"] = str(recipe.path), folds, available
    path = cv.write(out, results)
    report.cv_report(console, results)
    console.print(f"written to {path}; decide the test split with these offsets: --calibration_file {path}")
    return 0


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


COMMANDS = {"cv": cv_main, "preview": preview_main, "train": train_main, "eval": eval_main, "generate": generate_main, "serve": serve_main, "merge": merge_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        return 2
    wants_help = "-h" in argv or "--help" in argv
    if argv[0] == "generate" and wants_help:
        _generate_parser().print_help()
        return 0
    if argv[0] == "serve" and wants_help:
        try:
            serve_main(["--help"])  # argparse prints the options and exits 0
        except SystemExit as e:
            return int(e.code or 0)
    if wants_help:
        from medsft.config import RecipeParser

        print(USAGE + "\n\nEvery recipe key, with its default:")
        RecipeParser().parser.print_help()
        return 0
    command = argv.pop(0) if argv[0] in COMMANDS else "train"
    try:
        return COMMANDS[command](argv)
    except UserError as e:
        print(f"medsft: error: {e}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Multi-process CPU runs aborted at exit ("terminate called without an active exception") when the gloo
    process group was left for interpreter shutdown to tear down."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
