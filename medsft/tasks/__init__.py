"""Tasks: pure functions row -> {"prompt", "completion"}, shared by training and evaluation."""

from medsft.tasks import pubmedqa, report

__all__ = ["pubmedqa", "report"]
