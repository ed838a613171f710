"""`trainer: kto`: TRL's KTOTrainer on completions labelled desirable or not, medsft-tokenized (each answer's tokens
exactly SFT's for it): task: preference's unpaired rows, or a pair's chosen answer (desirable) and rejected one.

Its KL term estimates how far the policy moved on mismatched (prompt, completion) pairs. TRL builds them once, by
rotating each fixed batch of the file's rows by one, and so requires the file order every epoch; the rows medsft
builds from an item come together (its desirable answer, then each other option), so most rotated partners share
their prompt and the estimate is not over mismatched pairs. Here the partners are drawn in each batch as it is
collated, from rows of other prompts, so the rows may be shuffled every epoch under the seed as any trainer's are
(`train_sampling_strategy`, HF's default `random`)."""

from __future__ import annotations

from medsft.errors import UserError
from medsft.training.compact_head import compact_head_on_cpu
from medsft.training.preference_trainers import PreferenceTrainer


def partners(prompts: list[list[int]]) -> list[int]:
    """For each row of a batch, the row whose completion its KL sequence takes: the smallest rotation of the batch
    that pairs every row with another prompt (each completion then used once, as TRL's rotation by one does); where
    no rotation does, each row's nearest following row of another prompt; a batch of one prompt is rotated by one
    (no mismatched partner exists in it)."""
    n = len(prompts)
    for shift in range(1, n):
        if all(prompts[i] != prompts[(i - shift) % n] for i in range(n)):
            return [(i - shift) % n for i in range(n)]
    out = []
    for i in range(n):
        other = next((j % n for j in range(i + 1, i + n) if prompts[j % n] != prompts[i]), (i - 1) % n)
        out.append(other)
    return out


class MismatchedPartners:
    """TRL's collator, given each row's KL completion from another prompt of the same batch first."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        chosen = partners([e["prompt_ids"] for e in examples])
        return self.collator([{**e, "KL_completion_ids": examples[j]["completion_ids"]} for e, j in zip(examples, chosen)])


class KTO(PreferenceTrainer):
    name = "kto"
    paired = False

    def trainer_class(self) -> type:
        from trl import KTOTrainer

        class MedsftKTOTrainer(KTOTrainer):
            """KTOTrainer on medsft's prompt_ids / completion_ids / label (never re-rendered); the KL term's
            mismatched completions drawn per batch from other prompts (MismatchedPartners); the answers' positions
            alone scored on the CPU too."""

            def __init__(self, *args, **kwargs):
                config = kwargs["args"]
                order = config.train_sampling_strategy
                config.train_sampling_strategy = "sequential"  # TRL's check for its precomputed partners, not ours
                try:
                    super().__init__(*args, **kwargs)
                finally:
                    config.train_sampling_strategy = order
                if self.calculate_KL:
                    self.data_collator = MismatchedPartners(self.data_collator)

            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset  # partners are drawn as each batch is collated

            def compute_loss(self, *args, **kwargs):
                with compact_head_on_cpu():
                    return super().compute_loss(*args, **kwargs)

        return MedsftKTOTrainer

    def build(self, recipe, prepared, args, callbacks):
        if args.precompute_ref_log_probs and args.loss_type != "apo_zero_unpaired":
            raise UserError("precompute_ref_log_probs cannot be used with trainer: kto's KL term: its mismatched "
                            "partners are drawn in each batch as it is shuffled, not fixed in advance; remove "
                            "precompute_ref_log_probs (or use loss_type: apo_zero_unpaired, which has no KL term)")
        return super().build(recipe, prepared, args, callbacks)
