"""medsft: recipe-driven fine-tuning of language models on medical text (SFT, GRPO, DPO, KTO, ORPO, in stages), with
evaluation a reviewer can check and export to GGUF."""

__version__ = "0.1.0"
