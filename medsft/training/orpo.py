"""`trainer: orpo`: TRL's ORPOTrainer (kept under `trl.experimental` in TRL 1.16) on pairs medsft tokenized: the
chosen answer trained as SFT trains it, plus an odds-ratio penalty on the rejected one; no reference model.

ORPO's paper trains the chosen answer given its prompt (-log P(y_w | x)); TRL's trainer takes its NLL term over the
prompt's tokens too (its labels are the input ids under the attention mask), which on medsft's data (long notes,
one-word answers) would mostly train the model to write notes. The term is taken here over the answer's tokens
alone, the tokens SFT trains; the odds ratio is TRL's own."""

from __future__ import annotations

import os

from medsft.training.preference_trainers import PreferenceTrainer
from medsft.training.trainers import peft_config, quantization_config


class ORPO(PreferenceTrainer):
    name = "orpo"

    def trainer_class(self) -> type:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # where TRL keeps it is said in the docs
        from trl.experimental.orpo import ORPOTrainer

        class MedsftORPOTrainer(ORPOTrainer):
            """ORPOTrainer on medsft's prompt_ids / chosen_ids / rejected_ids: each sequence is the prompt and the
            answer, labelled on the answer's tokens only (what SFT trains)."""

            def concatenated_forward(self, model, batch):
                """TRL's forward, with the NLL term on the chosen answer's tokens only (its labels: -100 on the
                prompt), a mean over them as SFT's loss is."""
                import torch.nn.functional as F

                out = super().concatenated_forward(model, batch)
                logits = out[2]  # the chosen rows' logits, each position predicting the next token
                labels = batch["chosen_labels"][:, 1:].to(logits.device)
                labels = F.pad(labels, (0, logits.shape[1] - labels.shape[1]), value=-100)
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)
                return (*out[:4], nll, *out[5:])

            def tokenize_row(self, feature, model=None) -> dict:
                prompt, out = feature["prompt_ids"], {}
                out["prompt_input_ids"], out["prompt_attention_mask"] = prompt, [1] * len(prompt)
                for side in ("chosen", "rejected"):
                    answer = feature[f"{side}_ids"]
                    out[f"{side}_input_ids"] = prompt + answer
                    out[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
                    out[f"{side}_labels"] = [-100] * len(prompt) + answer
                return out

        return MedsftORPOTrainer

    def build(self, recipe, prepared, args, callbacks):
        quantized = quantization_config(recipe, prepared.model)
        if quantized is not None:  # ORPOTrainer takes no quantization_config: it loads with model_init_kwargs alone
            args.model_init_kwargs = {**(args.model_init_kwargs or {}), "quantization_config": quantized}
        return self.trainer_class()(
            model=prepared.model, args=args, train_dataset=prepared.train_dataset, eval_dataset=prepared.eval_dataset,
            processing_class=prepared.tokenizer, peft_config=peft_config(recipe, prepared.model), callbacks=list(callbacks))
