"""Training: the data and model handed to TRL's SFTTrainer (with a sparse completion-only loss), checkpoints and
signals, MLflow tracking, and cross-validation over a split's folds."""
