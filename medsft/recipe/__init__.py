"""The recipe: TrlParser over medsft's keys and TRL's SFTConfig / ModelConfig, the ranges and impossible settings refused
before anything loads, the defaults of this machine, the datasets of a mixture, and the run folder a recipe makes."""
