"""What the preference trainers (dpo.py, kto.py, orpo.py) share: their data, tokenized by medsft (data/pairs.py: each
answer's tokens exactly SFT's for it), its lines and preview, and the preference figures on the progress bar and in
the summary (reward accuracy: the share of pairs whose implicit reward prefers the chosen answer; the margin)."""

from __future__ import annotations

from dataclasses import replace

from medsft.data.encoding import Encoder
from medsft.data.pairs import preference_rows
from medsft.errors import UserError
from medsft.training.trainers import (DataLines, Prepared, Preview, Trainer, peft_config, quantization_config,
                                     steps_per_epoch)

ACCURACY, MARGIN = "rewards/accuracies", "rewards/margins"


class PreferenceTrainer(Trainer):
    paired = True  # pairs (DPO, ORPO) or unpaired completions with a label (KTO)

    def trainer_class(self) -> type:
        """TRL's trainer, taking medsft's tokens as they are."""
        raise NotImplementedError

    def build(self, recipe, prepared: Prepared, args, callbacks):
        return self.trainer_class()(
            model=prepared.model, ref_model=self.reference(recipe, prepared), args=args,
            train_dataset=prepared.train_dataset, eval_dataset=prepared.eval_dataset, processing_class=prepared.tokenizer,
            peft_config=peft_config(recipe, prepared.model), quantization_config=quantization_config(recipe, prepared.model),
            callbacks=list(callbacks))

    def reference(self, recipe, prepared: Prepared):
        """The model the loss compares against, where TRL would not build it as the start: a LoRA run folded in for
        a full stage (TRL would load the base its config names). None: TRL's own (the adapter switched off, its
        frozen copy of a continued adapter, or a second load of the weights the run starts from)."""
        begin = prepared.start
        if begin is None or not begin.adapter or recipe.model.use_peft:
            return None
        from medsft.models import loading, stages

        return stages.adapter_on(loading.load_model(recipe, begin.base), recipe, begin)

    def prepare(self, recipe, base: Prepared) -> Prepared:
        from datasets import Dataset

        args = recipe.training
        encoder = Encoder(base.tokenizer, args.max_length)
        train, train_stats = preference_rows(base.datasets, "train", encoder, args.seed, self.paired)
        if not train:
            why = f"{train_stats.dropped} too long for max_length {args.max_length}" if train_stats.dropped else "none built"
            raise UserError(f"no training {'pairs' if self.paired else 'completions'} from {train_stats.rows} rows "
                            f"({why}): trainer: {self.name} needs task: preference, or a choice task to build them from")
        stats, dev = {"train": train_stats}, None
        if args.eval_strategy != "no" and any(d.parts["eval"] for d in base.datasets):
            rows, stats["eval"] = preference_rows(base.datasets, "eval", encoder, args.seed, self.paired)
            dev = Dataset.from_list(rows) if rows else None
        return replace(base, train_dataset=Dataset.from_list(train), eval_dataset=dev, stats=stats)

    def data_lines(self, prepared: Prepared, args) -> DataLines:
        what = "pairs" if self.paired else "completions"
        out = []
        for split, s in prepared.stats.items():
            phrases = [(f"{s.pairs} {what} from {s.rows} rows", False)]
            if not self.paired:
                phrases.append((f"{s.desirable} desirable, {s.pairs - s.desirable} not", False))
            if s.truncated:
                phrases.append((f"{s.truncated} with the prompt shortened to fit max_length {args.max_length}", False))
            if s.dropped:
                phrases.append((f"{s.dropped} dropped (an answer cannot fit max_length {args.max_length})", True))
            out.append((split, phrases))
        return out

    def preview(self, prepared: Prepared, args, n: int) -> Preview:
        """The first n pairs: the prompt dimmed, each answer's trained tokens marked (what the loss compares)."""
        dataset, tokenizer = prepared.train_dataset, prepared.tokenizer
        panels = []
        for i, row in enumerate(dataset.select(range(min(n, len(dataset))))):
            prompt = [tokenizer.decode([t]) for t in row["prompt_ids"]]
            answers = [("chosen", row["chosen_ids"]), ("rejected", row["rejected_ids"])] if self.paired else \
                [("desirable" if row["label"] else "undesirable", row["completion_ids"])]
            for name, ids in answers:
                panels.append((f"{'pair' if self.paired else 'completion'} {i + 1}, {name}: {len(ids)} tokens compared",
                               prompt + [tokenizer.decode([t]) for t in ids], [0] * len(prompt) + [1] * len(ids)))
        s = prepared.stats["train"]
        rows = [(("pairs" if self.paired else "completions"), f"{s.pairs} from {s.rows} rows"),
                ("dropped", f"{s.dropped} (an answer cannot fit max_length)"),
                ("per epoch", f"{steps_per_epoch(len(dataset), args)} steps")]
        return Preview(f"medsft preview ({self.name.upper()}): nothing trained, nothing written", panels, rows)

    def progress(self, logs: dict) -> str | None:
        if "loss" not in logs:
            return None
        shown = f"loss {logs['loss']:.4f}"
        if ACCURACY in logs:
            shown += f", reward accuracy {logs[ACCURACY]:.2f}"
        if MARGIN in logs:
            shown += f", margin {logs[MARGIN]:.3f}"
        return shown

    def summary(self, log_history: list[dict]) -> list[tuple[str, str]]:
        """The reward accuracy (pairs only) and margin over the first and the last tenth of the logged steps."""
        logged = [h for h in log_history if MARGIN in h and "step" in h and not any(k.startswith("eval_") for k in h)]
        if not logged:
            return []
        tenth = max(1, len(logged) // 10)

        def mean(rows, key):
            values = [h[key] for h in rows if key in h]
            return sum(values) / len(values) if values else float("nan")

        first, last = logged[:tenth], logged[-tenth:]
        each = f"{tenth} step{'s' if tenth > 1 else ''}"
        rows = [("reward margin", f"{mean(first, MARGIN):.3f} (first {each}) -> {mean(last, MARGIN):.3f} (last {each})")]
        if any(ACCURACY in h for h in logged):
            rows.insert(0, ("reward accuracy", f"{mean(first, ACCURACY):.3f} -> {mean(last, ACCURACY):.3f}"))
        return rows
