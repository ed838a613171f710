"""The recipe: TrlParser over medsft's keys, the trainer's TRL config (SFTConfig, GRPOConfig, DPOConfig, KTOConfig,
ORPOConfig) and ModelConfig, the ranges and impossible settings refused before anything loads, the defaults of this
machine, and the datasets of a mixture."""
