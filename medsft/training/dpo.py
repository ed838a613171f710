"""`trainer: dpo`: TRL's DPOTrainer on pairs medsft tokenized (each answer's tokens exactly SFT's for it), its loss
(`loss_type`: sigmoid, ipo, hinge, ...) against the model training starts from: with LoRA, that model is the
adapter switched off (or TRL's frozen copy of an adapter the run continues); else a second copy of it."""

from __future__ import annotations

from medsft.training.compact_head import compact_head_on_cpu
from medsft.training.preference_trainers import PreferenceTrainer


class DPO(PreferenceTrainer):
    name = "dpo"

    def trainer_class(self) -> type:
        from trl import DPOTrainer

        class MedsftDPOTrainer(DPOTrainer):
            """DPOTrainer on medsft's prompt_ids / chosen_ids / rejected_ids (never re-rendered), scoring only the
            answers' positions on the CPU too."""

            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset

            def compute_loss(self, *args, **kwargs):
                with compact_head_on_cpu():
                    return super().compute_loss(*args, **kwargs)

            def _precompute_ref_logps(self, *args, **kwargs):
                with compact_head_on_cpu():
                    return super()._precompute_ref_logps(*args, **kwargs)

        return MedsftDPOTrainer
