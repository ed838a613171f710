"""`trainer: sft`: TRL's SFTTrainer (medsft's: sft_trainer.py's loss on the trained positions, packed rows, the
task's own metrics at each evaluation) on the rows medsft tokenized, the answer's tokens the only ones trained."""

from __future__ import annotations

from dataclasses import replace

from medsft.data import datasets, encoding
from medsft.errors import UserError
from medsft.training.trainers import (DataLines, Prepared, Preview, Trainer, peft_config, quantization_config,
                                     steps_per_epoch)


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


class SFT(Trainer):
    name = "sft"

    def prepare(self, recipe, base: Prepared) -> Prepared:
        """The training (and dev) rows tokenized with their label masks, as the loss sees them."""
        args = recipe.training
        encoder = encoding.Encoder(base.tokenizer, args.max_length, args.completion_only_loss is not False,
                                   args.assistant_only_loss)
        train_dataset, train_stats = datasets.encoded(base.datasets, "train", encoder, args.dataset_num_proc)
        if train_dataset is None:
            raise no_training_rows(train_stats, args.max_length)
        eval_dataset, eval_stats = None, None
        if args.eval_strategy != "no" and any(d.parts["eval"] for d in base.datasets):
            eval_dataset, eval_stats = datasets.encoded(base.datasets, "eval", encoder, args.dataset_num_proc)
        stats = {"train": train_stats} | ({"eval": eval_stats} if eval_stats else {})
        return replace(base, train_dataset=train_dataset, eval_dataset=eval_dataset, stats=stats)

    def build(self, recipe, prepared: Prepared, args, callbacks):
        from functools import partial

        from medsft.evaluation import scoring
        from medsft.training.sft_trainer import MedsftTrainer, packed_rows

        # medsft tokenized the rows, applied the chat template and built the loss mask: TRL must not redo any of it.
        args.assistant_only_loss, args.chat_template_path, args.eos_token = False, None, None
        if args.padding_free and not args.packing:
            args.max_length = None  # every row fits already; TRL refuses padding_free with a max_length it cannot enforce
        private = {}
        if recipe.script.dp is not None:  # DP-SGD: Opacus's per-example clipping and noise (private.py)
            from accelerate import PartialState

            from medsft.training.private import PrivateTrainer, plan

            cls = PrivateTrainer
            private = {"privacy": plan(recipe.script.dp, args, len(prepared.train_dataset), PartialState().num_processes)}
        else:
            cls = MedsftTrainer
        trainer = cls(
            model=prepared.model,
            args=args,
            train_dataset=prepared.train_dataset,
            eval_dataset=prepared.eval_dataset,
            processing_class=prepared.tokenizer,
            peft_config=peft_config(recipe, prepared.model),
            quantization_config=quantization_config(recipe, prepared.model),  # QLoRA; CUDA only, refused on CPU up front
            callbacks=list(callbacks),
            **private,
        )
        if args.packing and not args.padding_free:
            trainer.data_collator = packed_rows(trainer.processing_class.pad_token_id, args.pad_to_multiple_of)
        if prepared.eval_dataset is not None:
            settings = scoring.Settings(args.max_length, args.per_device_eval_batch_size, args.seed, sample_count=0)
            trainer.task_metrics = partial(scoring.dev_metrics, tokenizer=prepared.tokenizer, datasets=prepared.datasets,
                                           settings=settings)
        return trainer

    def data_lines(self, prepared: Prepared, args) -> DataLines:
        longest = args.max_length
        out = []
        for split, s in prepared.stats.items():
            phrases = [(f"{s.kept} rows", False)]
            if s.split:
                phrases.append((f"{s.split} long texts split into {s.pieces} pieces of at most {longest} tokens", False))
            if s.truncated:
                phrases.append((f"{s.truncated} with the context shortened to fit max_length {longest}", False))
            if s.dropped:
                phrases.append((f"{s.dropped} dropped (the answer or the question cannot fit max_length {longest})", True))
            if s.skipped:
                phrases.append((f"{s.skipped} skipped (the task could not format them)", True))
            if s.untrained:
                phrases.append((f"{s.untrained} without an assistant turn (nothing to train)", True))
            out.append((split, phrases))
        return out

    def preview(self, prepared: Prepared, args, n: int) -> Preview:
        """The first n training rows, their trained tokens marked, then what all of them became."""
        dataset, tokenizer = prepared.train_dataset, prepared.tokenizer
        panels = []
        for i, row in enumerate(dataset.select(range(min(n, len(dataset))))):
            mask = [int(label != encoding.IGNORE) for label in row["labels"]]
            panels.append((f"training example {i + 1}: {sum(mask)} of {len(mask)} tokens trained",
                           [tokenizer.decode([t]) for t in row["input_ids"]], mask))
        s = datasets.summarize(prepared.stats["train"])
        length = s["length"]
        rows = [
            ("rows", f"{s['kept']} of {s['rows']} kept"),
            ("split", f"{s['split']} (long texts split into {s['pieces']} pieces of at most max_length)"),
            ("truncated", f"{s['truncated']} (context shortened from the left so the answer fits)"),
            ("dropped", f"{s['dropped']} (the answer or the question cannot fit max_length)"),
            ("skipped", f"{s['skipped']} (the task could not format them)"),
            ("untrained", f"{s['untrained']} (conversations without an assistant turn: nothing to train)"),
            ("every label masked", str(s["all_masked"])),
            ("tokens a row", f"min {length['min']}, median {length['median']:g}, p95 {length['p95']}, max {length['max']}"),
            ("per epoch", f"{steps_per_epoch(len(dataset), args)} steps, {s['tokens']:,} tokens, "
                          f"{s['trained_tokens']:,} trained"),
        ]
        return Preview("medsft preview: nothing trained, nothing written", panels, rows)
