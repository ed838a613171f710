"""Training: one unit per trainer (SFT, GRPO, DPO, KTO, ORPO: TRL's trainers on medsft's tokens, looked up by name),
the run's data prepared and decontaminated, a stage started from an earlier run's folder, checkpoints and signals,
MLflow tracking, and cross-validation over a split's folds."""
