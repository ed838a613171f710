"""`trainer: kto`: TRL's KTOTrainer on completions labelled desirable or not, medsft-tokenized (each answer's tokens
exactly SFT's for it): task: preference's unpaired rows, or a pair's chosen answer (desirable) and rejected one."""

from __future__ import annotations

from medsft.training.compact_head import compact_head_on_cpu
from medsft.training.preference_trainers import PreferenceTrainer


class KTO(PreferenceTrainer):
    name = "kto"
    paired = False

    def trainer_class(self) -> type:
        from trl import KTOTrainer

        class MedsftKTOTrainer(KTOTrainer):
            """KTOTrainer on medsft's prompt_ids / completion_ids / label (never re-rendered); the KL term's mismatched
            completions built as TRL builds them (each batch's completions rotated by one); the answers' positions
            alone scored on the CPU too."""

            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                if not self.calculate_KL:
                    return dataset

                def rotated(batch):
                    return {"KL_completion_ids": [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]}

                return dataset.map(rotated, batched=True, batch_size=args.per_device_train_batch_size)

            def compute_loss(self, *args, **kwargs):
                with compact_head_on_cpu():
                    return super().compute_loss(*args, **kwargs)

        return MedsftKTOTrainer
