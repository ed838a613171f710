"""The rich console is the interface: the libraries' own progress bars, per-log prints and deprecation noise are
silenced before a command starts."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """The rich console is the interface: silence tqdm bars, per-log dict prints and deprecation noise."""
    import warnings

    import datasets
    import torch
    import transformers

    if not torch.cuda.is_available():  # the choice DeepSpeed makes itself, without its warning on every run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
