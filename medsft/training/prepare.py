"""Everything training needs, loaded and formatted exactly as training will see it (the preview shows the same):
the run's datasets by role (with the canaries a recipe inserts), the model's path (or a model built from scratch), its
tokenizer with the recipe's keys,
and the trainer's data (sft: the tokenized train and dev rows with their statistics; grpo: the prompts). Writes
nothing."""

from __future__ import annotations

from medsft.data import canaries, datasets
from medsft.models import locate, scratch, stages
from medsft.models.tokenizer import configure_tokenizer, tokenizer_for
from medsft.recipe import mixture
from medsft.recipe.parser import Recipe
from medsft.training import catalog
from medsft.training.decontaminate import decontaminate
from medsft.training.trainers import Prepared


def prepare(recipe: Recipe, saved: dict | None = None) -> Prepared:
    """Everything training needs, loaded and formatted exactly as training will see it; writes nothing. The model
    and tokenizer and the datasets by role are every trainer's; the data its TRL trainer takes is the trainer's."""
    script, args, model_args = recipe.script, recipe.training, recipe.model
    loaded = datasets.load(mixture.specs(script, args), saved)
    removed = decontaminate(recipe, loaded) if script.decontaminate else None
    if model_args.model_name_or_path == locate.SCRATCH:
        model, tokenizer = scratch.build_scratch(datasets.texts(loaded), script.scratch_config, args.max_length, args.seed)
        configure_tokenizer(tokenizer, args, script.chat_template_kwargs)
    else:
        model = locate.resolve(model_args.model_name_or_path)  # a run folder a stage starts from: its own tokenizer
        tokenizer = tokenizer_for(recipe, model)
    planted = canaries.made(script.canaries, args.seed) if script.canaries else None
    if planted:  # the audit's secrets, trained as text rows of their own; never in the user's data
        loaded = [*loaded, canaries.dataset(planted)]
    base = Prepared(model, tokenizer, loaded, start=stages.start(model_args.model_name_or_path), removed=removed,
                    canaries=planted)
    return catalog.get(script.trainer).prepare(recipe, base)
