"""medsft's own recipe keys: one dataset's source, splits and task (`DataFields`), the run's (`MedsftArguments`).

Everything else in a recipe belongs to TRL's `SFTConfig` and `ModelConfig`. A `dataset_mixture` entry takes the
same per-dataset keys as the top level (which serve as its defaults), plus `name` and `weight`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from medsft.errors import UserError
from medsft.recipe import privacy_keys, trainer_keys
from medsft.tasks import NAMES

TaskName = Literal[NAMES]  # type: ignore[valid-type]
TrainerName = Literal[trainer_keys.NAMES]  # type: ignore[valid-type]


def _help(text: str, default: Any = None) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class DataFields:
    """One dataset: where it is, how it splits, which task formats it and that task's options."""

    task: TaskName = _help("How rows become training examples and how they are scored; see docs/data.md.", "pubmedqa")
    dataset_name: str | None = _help("Hub id, local .json/.jsonl/.csv/.parquet file or folder, or 'synthetic' (built in).")
    dataset_config: str | None = _help("Hub config (e.g. pqa_labeled), or a sub-folder of a local folder.")
    data_files: dict[str, Any] | str | list[str] | None = _help("Files by split, e.g. {train: a.jsonl, test: b.jsonl}.")
    columns: dict[str, str] | str | list[str] | None = _help("Columns to keep (a list) or to rename (a mapping old: new).")
    train_split: str | None = _help("The dataset's split that trains.", "train")
    eval_split: str | None = _help("The dataset's dev split (default: validation, valid, val, dev or eval if present).")
    test_split: str | None = _help("The dataset's split that is scored.", "test")
    split_seed: int = _help("Seed of the split made where a dataset has none of its own (never the training seed).", 0)
    eval_split_size: float | None = _help("Dev rows carved from train where the data has no dev split: a fraction or a count.")
    test_split_size: float | None = _help("Test rows carved from train where the data has no test split: a fraction or a count.")
    split_file: str | None = _help("A JSON of ids: {test, folds} (PubMedQA's layout) or {train, eval, test}.")
    fold: int = _help("With a {test, folds} split: the fold that is the dev set; the other folds train.", 0)
    max_train_samples: int | None = _help("Cap on training rows (seeded sample).")
    max_eval_samples: int | None = _help("Cap on dev rows (stratified sample).")
    max_test_samples: int | None = _help("Cap on test rows (stratified sample: never the first N of a sorted file).")
    synthetic_size: int = _help("Rows made by the synthetic generator (pubmedqa and report).", 600)
    # Task options: each task reads some of them and refuses the others (tasks/*.py, OPTIONS).
    prompt_style: Literal["medsft", "lm_eval"] = _help("medsft's prompt, or lm-evaluation-harness's character for character.", "medsft")
    calibrate: bool = _help("Choice tasks: decide with per-choice offsets fitted on the dev split.", False)
    calibration_file: str | None = _help("Choice tasks: decide with the offsets a `medsft cv` run fitted (its cv_results.json).")
    include_long_answer: bool = _help("pubmedqa: train on the long answer after the yes/no/maybe decision.", False)
    section: str | None = _help("report: a header such as 'IMPRESSION:'; prompt = the note before it, completion = the section.")
    prompt_template: str | None = _help("template / multiple_choice: the prompt, with {field} placeholders.")
    completion_template: str | None = _help("template: the completion, with {field} placeholders.")
    chat: bool = _help("template, pubmedqa, multiple choice: the prompt as the user's turn and the answer as the assistant's, "
                       "through the model's chat template (for instruct models).", False)
    system_prompt: str | None = _help("With chat: a system turn before the user's.")
    question_field: str = _help("multiple_choice: the question column.", "question")
    options_field: str | None = _help("multiple_choice: the column holding the options (a mapping label: text, or a list).", "options")
    option_fields: list[str] | None = _help("multiple_choice: several columns, one option each (instead of options_field).")
    answer_field: str = _help("multiple_choice: the answer column: a label, a 0-based index or the option's text.", "answer_idx")
    choice_labels: list[str] | None = _help("multiple_choice: the labels of the options (default A, B, C, ...).")
    include_option_text: bool = _help("multiple_choice: train on the option's text after its label.", False)
    explanation_field: str | None = _help("multiple_choice: a column whose text is trained after the answer.")
    deidentify: Literal["off", "surrogate", "redact", "check"] = _help(
        "Identifiers (HIPAA Safe Harbor: names, dates, ages over 89, addresses, phone numbers, record numbers, ...) in "
        "the rows, found before anything is tokenized: surrogate replaces each with a consistent realistic one, "
        "redact with its category ([NAME]), check refuses to train if any is found; off (the default) trains on the "
        "rows as given, the user's choice. See docs/privacy.md.", "off")
    patient_column: str | None = _help(
        "With deidentify: the column naming each row's patient: one set of surrogates and one date shift for all of "
        "a patient's rows (else each row its own).")
    pairs: Literal["all", "sampled"] | None = _help(
        "Preference trainers (dpo, orpo, kto) on a choice task: the key's answer, as SFT trains it, against every other "
        "option (all, the default) or against one drawn per item under the run's seed (sampled).")

    def __post_init__(self):
        for key in ("data_files", "columns"):  # on the command line these arrive as JSON text
            value = getattr(self, key)
            if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
                try:
                    setattr(self, key, json.loads(value))
                except json.JSONDecodeError as e:
                    raise UserError(f"{key} must be JSON on the command line: {e}") from None
        if isinstance(self.columns, str):
            self.columns = [self.columns]
        if self.fold < 0:
            raise UserError(f"fold must be 0 or more, got {self.fold}")
        for key in ("eval_split_size", "test_split_size"):
            value = getattr(self, key)
            if value is not None and (value < 0 or (value >= 1 and value != int(value))):
                raise UserError(f"{key} must be a fraction below 1 or a whole count, got {value}")
        for key in ("max_train_samples", "max_eval_samples", "max_test_samples", "synthetic_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UserError(f"{key} must be at least 1, got {value}")


@dataclass
class DataSpec(DataFields):
    """One dataset of a run, resolved: the top-level keys, a mixture entry's own keys on top."""

    dataset_text_field: str = "text"  # SFTConfig's key at the top level
    name: str = ""  # names its evaluation and its ids in split_ids.json
    weight: float = 1.0  # share of its training rows used (0: evaluation only; above 1: repeated)


@dataclass
class MedsftArguments(DataFields):
    """The run: its datasets (this dataset, or a mixture), evaluation after training, samples, tracking, gates."""

    dataset_mixture: dict[str, Any] | str | list[Any] | None = _help(
        "Several datasets: a list of {id or path, config, split, columns, weight, task, ...} (or {datasets: [...]})."
    )
    scratch_config: dict[str, Any] | str | None = _help("GPT2Config fields for model_name_or_path: scratch-gpt2.")
    device_map: str | None = _help(
        "Where the model's layers go when it is loaded in one process (transformers' device_map: auto, balanced, "
        "sequential, cpu, cuda:1): a model larger than one GPU across this machine's GPUs, for eval, generate, serve, "
        "merge and single-process training.")
    chat_template_kwargs: dict[str, Any] | str | None = _help(
        "Keywords for the chat template in every render: training, scoring, samples, generate and serve (e.g. "
        "{enable_thinking: false} for Qwen3; as TRL's GRPOConfig names it)."
    )
    trainer: TrainerName = _help("; ".join(f"{k.name}: {k.about}" for k in trainer_keys.TRAINERS.values()) + ".",
                                 trainer_keys.DEFAULT)
    reward_funcs: list[str] | None = _help(
        "grpo: the rewards, in reward_weights' order: correctness (1 when the strict answer is the key), format (1 a "
        "stated answer, 0.5 one only named, 0 none), or your own function's dotted path (module.function: runs your "
        "code, so only with --trust_remote_code true on the command line). Default: [correctness, format].")
    eval_after_train: bool = _help("After training, evaluate base vs tuned model on each test split.", True)
    scoring: Literal["likelihood", "generate", "both"] | None = _help(
        "Choice tasks: likelihood (each option's log-likelihood after the prompt, lm-eval's way), generate (the model "
        "answers; its reply is read strictly and leniently, no answer counts wrong) or both side by side. Default: "
        "likelihood after sft, generate after grpo.")
    answer_max_new_tokens: int = _help("scoring: generate: the longest reply generated for an answer.", 32)
    num_samples: int = _help("scoring: generate: replies per item; above 1 (with answer_temperature) adds majority-vote "
                             "accuracy (maj@k).", 1)
    answer_temperature: float = _help("scoring: generate: 0 greedy; above 0 samples (needed for num_samples above 1).", 0.0)
    suite: str | None = _help("Evaluate on a benchmark suite (medical: PubMedQA, MedQA, MedMCQA, medical MMLU) instead.")
    suite_data: str | None = _help("The suite's local data folder (pubmedqa/, mcq/); default $MEDSFT_DATA, else the hub.")
    contamination_ngram: int = _help(
        "Contamination check: the length, in words, of the sequences a test item shares with training rows (13: one "
        "shared sentence of exam boilerplate is not enough; docs/evaluation.md).", 13)
    contamination_threshold: float = _help(
        "Contamination check: a test item whose words are covered at least this much by shared sequences is "
        "contaminated (Llama 2's method).", 0.5)
    decontaminate: bool = _help("Remove the training rows behind every contaminated test item the run scores (its "
                                "test splits, and the suite with suite) before training; the run records which.", False)
    sample_count: int = _help("Sample generations shown base vs tuned after evaluation (0: none).", 3)
    sample_prompts: list[str] | None = _help("Prompts for the sample generations; default: a few from the task.")
    sample_max_new_tokens: int = _help("Length of each sample generation.", 64)
    mlflow_tracking_uri: str | None = _help("With report_to: mlflow, a folder (default mlruns/) or a tracking server URI.")
    max_eval_loss: float | None = _help("Quality gate: exit 3 when the final eval loss is above this.")
    min_accuracy: float | None = _help("Quality gate: exit 3 when test accuracy (0-1) is below this.")
    overwrite_output_dir: bool = _help("Allow writing into an output_dir that holds a different run.", False)
    streaming: bool = _help("Refused: rows are split by id and prepared once on disk (see docs/data.md).", False)
    dp: dict[str, Any] | str | None = _help(
        "Differentially private training (DP-SGD through Opacus, trainer: sft, LoRA or full): {epsilon: E, delta: D "
        "(default 1 / (2 x training rows)), max_grad_norm: C (each example's gradient clipped to it; default 1.0), "
        "accountant: prv (default) or rdp}; the noise is calibrated to spend E over the planned steps, and the budget spent "
        "is recorded in run_state.json (docs/privacy.md).")
    canaries: dict[str, Any] | str | None = _help(
        "Secrets inserted into the training rows for the memorization audit: {count: C, repeats: [1, 4, 16], format: "
        "\"The patient's medical record number is {secret}.\"} ({secret}: 7 digits; {secret:N}: N), recorded in "
        "the run, never in your data.")
    audit: bool = _help("After training and evaluation, audit what the model gives back (medsft audit: extraction, "
                        "membership inference, canaries' exposure) into audit.json.", False)

    def __post_init__(self):
        super().__post_init__()
        for key in ("scratch_config", "dataset_mixture", "chat_template_kwargs", "dp", "canaries"):
            value = getattr(self, key)
            if isinstance(value, str):
                try:
                    setattr(self, key, json.loads(value))
                except json.JSONDecodeError as e:
                    raise UserError(f"{key} must be a mapping (JSON on the command line): {e}") from None
        self.dp, self.canaries = privacy_keys.dp(self.dp), privacy_keys.canaries(self.canaries)
        if self.streaming:
            raise UserError("streaming: true is not offered: medsft gives each row its role (train, dev, test) by its id "
                            "and keeps a test split that is never trained on, which needs every row once; rows are "
                            "prepared once and kept on disk as memory-mapped Arrow (docs/data.md). For more rows than "
                            "fit in memory, cap them (max_train_samples) or split the files into a dataset_mixture")
        if self.scoring is None:
            self.scoring = trainer_keys.get(self.trainer).scoring
        if self.answer_max_new_tokens < 1:
            raise UserError(f"answer_max_new_tokens must be at least 1, got {self.answer_max_new_tokens}")
        if self.num_samples < 1:
            raise UserError(f"num_samples is the number of replies per item for majority vote (scoring: generate), at "
                            f"least 1, got {self.num_samples}; the sample panels' count is sample_count")
        if self.answer_temperature < 0:
            raise UserError(f"answer_temperature must be 0 (greedy) or more, got {self.answer_temperature}")
        if self.num_samples > 1 and (self.scoring == "likelihood" or self.answer_temperature == 0):
            raise UserError(f"num_samples {self.num_samples} votes among sampled replies: it needs scoring: generate (or "
                            "both) and answer_temperature above 0 (greedy replies are all the same); the sample "
                            "panels' count is sample_count")
        if self.scoring == "generate" and (self.calibrate or self.calibration_file):
            key = "calibrate" if self.calibrate else "calibration_file"
            raise UserError(f"{key} offsets the choices' likelihoods; scoring: generate reads the answer from the reply, "
                            "which has none to offset: remove it, or use scoring: both")
        for key, trainers in trainer_keys.only_some().items():
            if getattr(self, key) is not None and self.trainer not in trainers:
                raise UserError(f"{key} is read by trainer: {' or '.join(trainers)}, and this recipe's trainer is "
                                f"{self.trainer}; set trainer: {trainers[0]} or remove it")
        if self.sample_count < 0:
            raise UserError(f"sample_count must be 0 or more, got {self.sample_count}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise UserError(f"min_accuracy is a fraction between 0 and 1, got {self.min_accuracy}")
