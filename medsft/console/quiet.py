"""The rich console is the interface: the libraries' own progress bars, per-log prints and deprecation noise are
silenced before a command starts."""

from __future__ import annotations

import os


def quiet_libraries(models: bool = True) -> None:
    """The rich console is the interface: silence tqdm bars, per-log dict prints and deprecation noise. `models`: the
    command loads a model (DeepSpeed may come with it): on a machine without CUDA, DeepSpeed is told it runs on the
    CPU, the choice it makes itself, without its warning on every run (asking needs torch: `preview` does not)."""
    import warnings

    import datasets
    import transformers

    if models:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
