"""`trainer: grpo`: TRL's GRPOTrainer on a choice task's training rows, rewarded by what each generated reply answers.

The prompts are the ones SFT trains the answer after and evaluation generates after (data/prompts.answer_prompt: the
chat template, Qwen3's think block, a long prompt shortened as SFT shortens it); the rewards read each reply as
evaluation reads it (the task's answer: strict, lenient or none). Built in: `correctness` (1 when the strict answer
is the key, else 0) and `format` (1 a stated answer, 0.5 an option only named, 0 none), weighted by reward_weights;
a user's own function by its dotted path, only with --trust_remote_code true on the command line.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from medsft.data import encoding
from medsft.data.prompts import answer_prompt
from medsft.errors import UserError
from medsft.training.compact_head import compact_head_on_cpu
from medsft.training.trainers import (DataLines, Prepared, Preview, Trainer, peft_config, quantization_config,
                                     steps_per_epoch)

DEFAULT_REWARDS = ["correctness", "format"]


def _text(completion: Any) -> str:
    """A reply's text: TRL passes a conversational reply as its messages."""
    return completion if isinstance(completion, str) else "".join(m.get("content") or "" for m in completion)


def builtin_rewards(items: dict[str, tuple[Any, dict]]) -> dict[str, Callable]:
    """The built-in rewards over `items` ({item key: (task, row)}), named as TRL logs them (rewards/<name>/mean)."""

    def correctness(completions, item, **_) -> list[float]:
        out = []
        for completion, key in zip(completions, item):
            task, row = items[key]
            out.append(float(task.answer(row, _text(completion)).strict == task.gold(row)))
        return out

    def format(completions, item, **_) -> list[float]:  # noqa: A001 - the reward's logged name
        out = []
        for completion, key in zip(completions, item):
            task, row = items[key]
            answer = task.answer(row, _text(completion))
            out.append(1.0 if answer.strict is not None else 0.5 if answer.lenient is not None else 0.0)
        return out

    return {"correctness": correctness, "format": format}


def reward_functions(names: list[str] | None, items: dict, trusted: bool) -> list[Callable]:
    """The recipe's reward_funcs as callables, in order: built-in names, or module.function of the user's own code
    (imported only when `trusted`: --trust_remote_code true on this command line)."""
    builtin = builtin_rewards(items)
    out = []
    for name in names or DEFAULT_REWARDS:
        if name in builtin:
            out.append(builtin[name])
            continue
        if "." not in name:
            raise UserError(f"reward_funcs: {name!r} is not a built-in reward ({', '.join(builtin)}) nor a dotted path "
                            "module.function")
        if not trusted:
            raise UserError(f"reward_funcs: {name} is your own code; medsft imports it only with --trust_remote_code true "
                            "on the command line")
        module, function = name.rsplit(".", 1)
        try:
            found = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as e:
            raise UserError(f"reward_funcs: cannot import {name}: {e}") from None
        if not callable(found):
            raise UserError(f"reward_funcs: {name} is not a function")
        out.append(found)
    return out


def _key(prompt: Any) -> str:
    return json.dumps(prompt, sort_keys=True)


def prompts(datasets: list, role: str, tokenizer, max_length: int | None) -> tuple[list[dict], dict[str, list[int]], dict]:
    """(the GRPO dataset's rows {prompt, item}, each prompt's ids, {item: (task, row)}) of the datasets' rows in
    `role`, each dataset repeated or cut by its weight as SFT's rows are."""
    from medsft.data.datasets import weighted

    rows, ids, items = [], {}, {}
    encoder = encoding.Encoder(tokenizer, max_length)
    for dataset in datasets:
        if not dataset.task.choices:
            raise UserError(f"trainer: grpo rewards answers checked against the key: dataset {dataset.spec.name} is task "
                            f"{dataset.task.name}, which has none; use a choice task (pubmedqa, multiple_choice, medqa, ...)")
        for row in (weighted(dataset.parts[role], dataset.spec.weight, dataset.spec.split_seed) if role == "train"
                    else dataset.parts[role]):
            example = dataset.task.example(row)
            key = f"{dataset.spec.name}/{row['id']}"
            items[key] = (dataset.task, row)
            ids.setdefault(_key(example.prompt), answer_prompt(encoder, dataset.task, row))
            rows.append({"prompt": example.prompt, "item": key})
    return rows, ids, items


def prompt_ids_of(prepared, rows) -> list[list[int]]:
    """The ids GRPO generates after for these rows of prepared.train_dataset."""
    return [prepared.prompt_ids[_key(row["prompt"])] for row in rows]


def trainer_class():
    from trl import GRPOTrainer

    class MedsftGRPOTrainer(GRPOTrainer):
        """GRPOTrainer generating after medsft's prompt ids (the tokens SFT and evaluation use), not a re-render, and
        scoring only the completions' positions on the CPU too."""

        prompt_ids: dict[str, list[int]] = {}

        def _tokenize_prompts(self, prompts):
            return [list(self.prompt_ids[_key(p)]) for p in prompts], None, {}

        def _get_per_token_logps_and_entropies(self, *args, **kwargs):
            with compact_head_on_cpu():
                return super()._get_per_token_logps_and_entropies(*args, **kwargs)

    return MedsftGRPOTrainer


def reward_trend(log_history: list[dict]) -> dict[str, float] | None:
    """The mean reward and reply length (tokens) over the first and the last tenth of the logged steps (at least one
    step each): how GRPO moved them. None for a run that logged no reward."""
    logged = [h for h in log_history if "reward" in h and "step" in h]
    if not logged:
        return None
    tenth = max(1, len(logged) // 10)

    def mean(rows, key):
        values = [h[key] for h in rows if key in h]
        return sum(values) / len(values) if values else float("nan")

    first, last = logged[:tenth], logged[-tenth:]
    return {"steps_each": tenth, "reward_first": mean(first, "reward"), "reward_last": mean(last, "reward"),
            "length_first": mean(first, "completions/mean_length"), "length_last": mean(last, "completions/mean_length")}


@dataclass
class Prompts(Prepared):
    """GRPO's data: the rows {prompt, item}, each prompt's ids as SFT renders them, and {item: (task, row)}, what the
    rewards check the replies against."""

    prompt_ids: dict[str, list[int]] = field(default_factory=dict)
    items: dict[str, Any] = field(default_factory=dict)


class GRPO(Trainer):
    name = "grpo"

    def prepare(self, recipe, base: Prepared) -> Prompts:
        """Each training (and dev) row's prompt, as SFT renders it, and the item its rewards check."""
        from datasets import Dataset

        args = recipe.training
        train, ids, items = prompts(base.datasets, "train", base.tokenizer, args.max_length)
        if not train:
            raise UserError("no training rows: every dataset is test-only or has weight 0")
        dev = []
        if args.eval_strategy != "no":
            dev, dev_ids, dev_items = prompts(base.datasets, "eval", base.tokenizer, args.max_length)
            ids, items = {**ids, **dev_ids}, {**items, **dev_items}
        return Prompts(**{**vars(base), "train_dataset": Dataset.from_list(train),
                          "eval_dataset": Dataset.from_list(dev) if dev else None}, prompt_ids=ids, items=items)

    def build(self, recipe, prepared: Prompts, args, callbacks) -> Any:
        from pathlib import Path

        from medsft.runs import run_folder

        if isinstance(prepared.model, str) and run_folder.holds_adapter(Path(prepared.model)):  # not a medsft run
            raise UserError(f"model_name_or_path {prepared.model} is a bare LoRA adapter; GRPO starts from a model or a "
                            f"medsft run: python -m medsft merge {prepared.model} MERGED, then model_name_or_path: MERGED")
        trusted = bool(recipe.training.trust_remote_code) and "trust_remote_code" in recipe.cli
        rewards = reward_functions(recipe.script.reward_funcs, prepared.items, trusted)
        if args.reward_weights is not None and len(args.reward_weights) != len(rewards):
            raise UserError(f"reward_weights has {len(args.reward_weights)} weights for {len(rewards)} reward_funcs "
                            f"({', '.join(recipe.script.reward_funcs or DEFAULT_REWARDS)}); give one each")
        cls = trainer_class()
        cls.prompt_ids = prepared.prompt_ids
        return cls(model=prepared.model, reward_funcs=rewards, args=args, train_dataset=prepared.train_dataset,
                   eval_dataset=prepared.eval_dataset, processing_class=prepared.tokenizer,
                   peft_config=peft_config(recipe, prepared.model),
                   quantization_config=quantization_config(recipe, prepared.model), callbacks=list(callbacks))

    def data_lines(self, prepared: Prompts, args) -> DataLines:
        lines = [("train", [(f"{len(prepared.train_dataset)} prompts, {args.num_generations} replies each a step", False)])]
        if prepared.eval_dataset is not None:
            lines.append(("eval", [(f"{len(prepared.eval_dataset)} prompts", False)]))
        return lines

    def preview(self, prepared: Prompts, args, n: int) -> Preview:
        """The prompts as the model receives them (the replies are generated after them and rewarded; no token of a
        prompt is trained), then their lengths."""
        dataset, tokenizer, replies = prepared.train_dataset, prepared.tokenizer, args.num_generations
        shown = prompt_ids_of(prepared, dataset.select(range(min(n, len(dataset)))))
        panels = [(f"prompt {i + 1}: {len(ids)} tokens, {replies} replies generated after it",
                   [tokenizer.decode([t]) for t in ids], None) for i, ids in enumerate(shown)]
        lengths = sorted(len(ids) for ids in prompt_ids_of(prepared, dataset))
        rows = [("prompts", str(len(lengths)))]
        if lengths:
            rows.append(("tokens a prompt", f"min {lengths[0]}, median {lengths[len(lengths) // 2]}, "
                                            f"p95 {lengths[int(0.95 * (len(lengths) - 1))]}, max {lengths[-1]}"))
        rows.append(("per epoch", f"{steps_per_epoch(len(lengths) * replies, args)} steps, {len(lengths) * replies} replies"))
        return Preview("medsft preview (GRPO): nothing trained, nothing written", panels, rows)

    def progress(self, logs: dict) -> str | None:
        if "reward" in logs:  # its loss says little, its reward a lot
            return f"reward {logs['reward']:.3f}"
        return super().progress(logs)

    def summary(self, log_history: list[dict]) -> list[tuple[str, str]]:
        trend = reward_trend(log_history)
        if trend is None:
            return []
        each = f"{trend['steps_each']} step{'s' if trend['steps_each'] > 1 else ''}"
        return [("reward", f"{trend['reward_first']:.3f} (first {each}) -> {trend['reward_last']:.3f} (last {each})"),
                ("reply length", f"{trend['length_first']:.1f} -> {trend['length_last']:.1f} tokens")]
