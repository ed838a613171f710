"""PNG figures for output_dir: loss curves, GRPO's reward and reply length, and the confusion matrix (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medsft.runs import records  # noqa: E402


def loss_curves(log_history: list[dict], path: Path) -> Path | None:
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h and "step" in h]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for points, label, style in ((train, "train", "-"), (evals, "eval", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reward_curves(log_history: list[dict], path: Path) -> Path | None:
    """GRPO: the mean reward and the mean reply length at each logged step."""
    points = [(h["step"], h["reward"], h.get("completions/mean_length")) for h in log_history if "reward" in h and "step" in h]
    if not points:
        return None
    steps, rewards, lengths = zip(*points)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(steps, rewards, "-", color="tab:green", label="reward")
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    if all(x is not None for x in lengths):
        twin = ax.twinx()
        twin.plot(steps, lengths, "--", color="tab:gray", label="reply length")
        twin.set_ylabel("mean reply length (tokens)")
    ax.set_title("reward and reply length")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def confusion_matrix(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(output_dir: str, log_history: list[dict], results: dict | None) -> None:
    """loss_curves.png and a confusion matrix per choice evaluation (of the tuned model, else the base) in output_dir."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    loss_curves(log_history, out / records.LOSS_CURVES)
    reward_curves(log_history, out / records.REWARD_CURVES)
    choice = [e for e in (results or {}).get("evaluations", []) if "labels" in e]
    for i, evaluation in enumerate(choice):
        name = "tuned" if "tuned" in evaluation["models"] else "base"
        matrix = evaluation["models"][name]["confusion_matrix"]
        generated = evaluation.get("scoring") == "generate"  # scoring: both, beside the likelihood's
        file = records.confusion_matrix_file(i, evaluation["name"], generated)
        title = f"{evaluation['name']} ({name}{', generated answers' if generated else ''})"
        confusion_matrix(matrix, evaluation["labels"], title, out / file)
