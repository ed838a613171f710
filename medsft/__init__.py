"""medsft: recipe-driven supervised fine-tuning of language models on medical text."""

__version__ = "0.1.0"
