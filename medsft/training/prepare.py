"""Everything training needs, loaded and formatted exactly as training will see it (the preview shows the same):
the run's datasets by role, the model's path (or a model built from scratch), its tokenizer with the recipe's keys,
and the tokenized train and dev rows with their statistics. Writes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medsft.data import datasets, encoding
from medsft.errors import UserError
from medsft.models import locate, scratch
from medsft.models.tokenizer import configure_tokenizer, tokenizer_for
from medsft.recipe import mixture
from medsft.recipe.parser import Recipe


@dataclass
class Prepared:
    model: Any  # a path for from_pretrained, or a model object (scratch)
    tokenizer: Any
    datasets: list[datasets.Dataset]
    train_dataset: Any
    eval_dataset: Any
    stats: dict[str, encoding.EncodeStats] = field(default_factory=dict)
    prompt_ids: dict[str, list[int]] = field(default_factory=dict)  # GRPO: each prompt's ids, as SFT renders them
    items: dict[str, Any] = field(default_factory=dict)  # GRPO: {item: (task, row)}, what the rewards check against


def no_training_rows(stats: encoding.EncodeStats, max_length: int | None) -> UserError:
    if stats.rows == 0:
        return UserError("no training rows: every dataset is test-only or has weight 0")
    if stats.untrained == stats.rows:
        return UserError(f"none of the {stats.rows} training conversations has an assistant turn: nothing to train "
                         "(assistant_only_loss trains the assistant's replies)")
    if stats.dropped == 0:
        return UserError(f"none of the {stats.rows} training rows could be formatted by the task "
                         "(e.g. a section that is in no note); check the task's keys")
    return UserError(f"max_length {max_length} is too small to hold any answer: all {stats.rows} training rows were "
                     f"dropped ({stats.dropped} too long for their answer and question, {stats.skipped} unformattable); raise max_length")


def prepare(recipe: Recipe, saved: dict | None = None) -> Prepared:
    """Everything training needs, loaded and formatted exactly as training will see it; writes nothing."""
    script, args, model_args = recipe.script, recipe.training, recipe.model
    loaded = datasets.load(mixture.specs(script, args), saved)
    if model_args.model_name_or_path == locate.SCRATCH:
        model, tokenizer = scratch.build_scratch(datasets.texts(loaded), script.scratch_config, args.max_length, args.seed)
        configure_tokenizer(tokenizer, args, script.chat_template_kwargs)
    else:
        model = locate.resolve(model_args.model_name_or_path)
        tokenizer = tokenizer_for(recipe, model)
    if script.trainer == "grpo":
        return _prompts(recipe, model, tokenizer, loaded)
    encoder = encoding.Encoder(tokenizer, args.max_length, args.completion_only_loss is not False, args.assistant_only_loss)
    train_dataset, train_stats = datasets.encoded(loaded, "train", encoder, args.dataset_num_proc)
    if train_dataset is None:
        raise no_training_rows(train_stats, args.max_length)
    eval_dataset, eval_stats = None, None
    if args.eval_strategy != "no" and any(d.parts["eval"] for d in loaded):
        eval_dataset, eval_stats = datasets.encoded(loaded, "eval", encoder, args.dataset_num_proc)
    stats = {"train": train_stats} | ({"eval": eval_stats} if eval_stats else {})
    return Prepared(model, tokenizer, loaded, train_dataset, eval_dataset, stats)


def _prompts(recipe: Recipe, model, tokenizer, loaded: list) -> Prepared:
    """GRPO's data: each training (and dev) row's prompt, as SFT renders it, and the item its rewards check."""
    from medsft.training import grpo

    args = recipe.training
    train, ids, items = grpo.prompts(loaded, "train", tokenizer, args.max_length)
    if not train:
        raise UserError("no training rows: every dataset is test-only or has weight 0")
    dev = []
    if args.eval_strategy != "no":
        dev, dev_ids, dev_items = grpo.prompts(loaded, "eval", tokenizer, args.max_length)
        ids, items = {**ids, **dev_ids}, {**items, **dev_items}
    return Prepared(model, tokenizer, loaded, train, dev or None, prompt_ids=ids, items=items)
