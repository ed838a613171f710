"""What a run folder records beside its weights, by name: the split ids, the evaluation (eval_results.json,
predictions.jsonl), cross-validation (cv_results.json, oof_predictions.jsonl), the trainer's state and the plots'
file names; written and read here only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IDS_FILE = "split_ids.json"
EVAL_RESULTS, PREDICTIONS = "eval_results.json", "predictions.jsonl"
CV_RESULTS, OOF_PREDICTIONS = "cv_results.json", "oof_predictions.jsonl"
TRAINER_STATE = "trainer_state.json"
DECONTAMINATED_FILE = "decontaminated.json"  # with decontaminate: the training rows removed, by dataset
CHAIN_FILE = "chain.json"  # a stage's chain: the base model, then each earlier run it started from
DEIDENTIFIED_FILE = "deidentified.json"  # with deidentify: what was found and replaced, by dataset (numbers only)
CANARIES_FILE = "canaries.json"  # with canaries: the secrets inserted, their format and repeat counts
AUDIT_FILE = "audit.json"  # medsft audit: extraction, membership inference, canaries' exposure
LOSS_CURVES, REWARD_CURVES, CONFUSION_MATRIX = "loss_curves.png", "reward_curves.png", "confusion_matrix.png"


def write_ids(output_dir: str, splits: dict[str, dict[str, list[dict]]]) -> None:
    """split_ids.json: every dataset's train / eval / test ids, which `eval RUN` reuses."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = {name: {role: [r["id"] for r in rows] for role, rows in parts.items()} for name, parts in splits.items()}
    (out / IDS_FILE).write_text(json.dumps(ids))


def read_ids(output_dir: str) -> dict[str, dict[str, list[str]]] | None:
    path = Path(output_dir) / IDS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_decontaminated(output_dir: str, removed: dict[str, list[str]]) -> None:
    found = {name: {"removed": len(ids), "ids": ids} for name, ids in removed.items()}
    (Path(output_dir) / DECONTAMINATED_FILE).write_text(json.dumps(found, indent=2))


def write_deidentified(output_dir: str, summaries: dict[str, dict]) -> None:
    (Path(output_dir) / DEIDENTIFIED_FILE).write_text(json.dumps(summaries, indent=2))


def write_canaries(output_dir: str, config: dict, planted: list) -> None:
    (Path(output_dir) / CANARIES_FILE).write_text(json.dumps(
        {"settings": config, "canaries": [{"secret": c.secret, "repeats": c.repeats, "text": c.text} for c in planted]},
        indent=2))


def read_canaries(folder: Path) -> dict | None:
    path = Path(folder) / CANARIES_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_audit(folder: Path, found: dict) -> Path:
    path = Path(folder) / AUDIT_FILE
    path.write_text(json.dumps(found, indent=2))
    return path


def write_chain(output_dir: str, chain: list[dict[str, Any]]) -> None:
    (Path(output_dir) / CHAIN_FILE).write_text(json.dumps(chain, indent=2))


def read_chain(folder: Path) -> list[dict[str, Any]] | None:
    path = Path(folder) / CHAIN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_evaluation(output_dir: str, results: dict[str, Any], predictions: list[dict]) -> None:
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EVAL_RESULTS).write_text(json.dumps(results, indent=2))
    (folder / PREDICTIONS).write_text("".join(json.dumps(p) + "\n" for p in predictions))


def write_cv(folder: Path, results: dict[str, Any], oof: list[dict]) -> None:
    """cv_results.json, and every out-of-fold item (oof_predictions.jsonl)."""
    folder.mkdir(parents=True, exist_ok=True)
    cv_results(folder).write_text(json.dumps(results, indent=2))
    (folder / OOF_PREDICTIONS).write_text("".join(json.dumps(item) + "\n" for item in oof))


def cv_results(folder: Path) -> Path:
    return folder / CV_RESULTS


def save_trainer_state(state, output_dir: str) -> None:
    """The trainer's state (steps, log history) beside the final weights, as each checkpoint holds its own."""
    state.save_to_json(str(Path(output_dir) / TRAINER_STATE))


def confusion_matrix_file(index: int, name: str, generated: bool) -> str:
    """The first choice evaluation's is confusion_matrix.png; each further one's carries its dataset's name (and
    _generated for the generated answers of scoring: both)."""
    return CONFUSION_MATRIX if index == 0 else f"confusion_matrix_{name}{'_generated' if generated else ''}.png"
