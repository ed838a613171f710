"""Data: sources (hub, local file or folder, synthetic) -> task rows -> splits -> token ids with the answer kept."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsft import synthetic
from medsft.config import MedsftArguments
from medsft.errors import UserError
from medsft.tasks import pubmedqa, report

LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def _read_json(path: Path) -> list[tuple[str | None, dict]]:
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((None, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UserError(f"dataset {path} line {n} is not valid JSON: {e.msg}") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"dataset {path} is not valid JSON (line {e.lineno}): {e.msg}") from None
    if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        return list(data.items())  # the original PubMedQA release: {pmid: item}
    if isinstance(data, list):
        return [(None, r) for r in data]
    raise UserError(f"dataset {path} must hold a list of rows or an object of rows keyed by id")


def _read_local(path: Path) -> list[tuple[str | None, dict]]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in LOCAL_SUFFIXES)
        if not files:
            raise UserError(f"dataset folder {path} holds no {'/'.join(LOCAL_SUFFIXES)} file")
        return [row for f in files for row in _read_local(f)]
    if path.suffix in (".json", ".jsonl"):
        return _read_json(path)
    if path.suffix in (".csv", ".parquet"):
        from datasets import load_dataset

        ds = load_dataset(path.suffix[1:], data_files=str(path), split="train")
        return [(None, r) for r in ds]
    raise UserError(f"dataset {path}: unsupported file type; use one of {', '.join(LOCAL_SUFFIXES)}")


def _read_hub(name: str, config: str | None) -> list[tuple[str | None, dict]]:
    from datasets import load_dataset

    try:
        ds = load_dataset(name, config)
    except Exception as e:  # offline, unknown id, gated: the hub client raises many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load dataset '{name}' from the hub ({first}); for local data give a file path as dataset_name") from None
    return [(None, r) for split in ds.values() for r in split]


def is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix in LOCAL_SUFFIXES or Path(name).exists()


def load_rows(args: MedsftArguments, seed: int) -> list[dict[str, Any]]:
    """All rows of the source, normalized to the task's schema; a malformed row is a UserError naming it."""
    if args.dataset_name == "synthetic":
        raw, source = [(None, r) for r in synthetic.generate(args.task, args.synthetic_size, seed)], "synthetic"
    elif is_local(args.dataset_name):
        path = Path(args.dataset_name).expanduser()
        if not path.exists():
            raise UserError(f"dataset file not found: {path} (dataset_name); give a path to a file or folder")
        raw, source = _read_local(path), str(path)
    else:
        raw, source = _read_hub(args.dataset_name, args.dataset_config), args.dataset_name
    rows, seen = [], set()
    for n, (key, item) in enumerate(raw, 1):
        where = f"dataset {source} row {n}" + (f" (id {key})" if key else "")
        if not isinstance(item, dict):
            raise UserError(f"{where} is not a JSON object")
        try:
            if args.task == "pubmedqa":
                row = pubmedqa.normalize(item, key)
            else:
                row = report.normalize(item, key, args.text_field)
        except KeyError as e:
            raise UserError(f"{where} has no field {e.args[0]!r}, which the {args.task} task needs") from None
        except (ValueError, TypeError) as e:
            raise UserError(f"{where}: {e}") from None
        if args.task == "report":  # MTSamples lists 415 notes twice under two subsets
            if row["text"] in seen:
                continue
            seen.add(row["text"])
        rows.append(row)
    if not rows:
        raise UserError(f"dataset {source} has no rows")
    return rows


def stratified_sample(rows: list[dict], n: int, seed: int, key: str = "final_decision") -> list[dict]:
    """n rows keeping the label proportions (PubMedQA's test file is ordered by label: never take the first n)."""
    if n >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    groups: dict[Any, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get(key), []).append(r)
    picked = []
    for label, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        k = round(n * len(group) / len(rows))
        picked += rng.sample(group, min(k, len(group)))
    rng.shuffle(picked)
    return picked[:n]


def _official_split_file(args: MedsftArguments) -> Path | None:
    if args.split_file:
        path = Path(args.split_file).expanduser()
        if not path.is_file():
            raise UserError(f"split_file not found: {path}")
        return path
    if args.dataset_name != "synthetic" and is_local(args.dataset_name):
        beside = Path(args.dataset_name).expanduser()
        beside = (beside if beside.is_dir() else beside.parent) / "splits.json"
        return beside if beside.is_file() else None
    return None


def split(rows: list[dict[str, Any]], args: MedsftArguments, seed: int) -> dict[str, list[dict[str, Any]]]:
    """{"train", "eval", "test"}. PubMedQA uses the official split where its file is known: 500 test items,
    fold `fold` (50) as eval and the other 450 as train; otherwise a seeded split in the same proportions."""
    official = _official_split_file(args) if args.task == "pubmedqa" else None
    if official is not None:
        spec = json.loads(official.read_text())
        by_id = {r["id"]: r for r in rows}
        missing = [i for i in spec["test"] if i not in by_id]
        if missing:
            raise UserError(f"split_file {official}: {len(missing)} test ids (e.g. {missing[0]}) are not in the dataset")
        train_ids = [i for k, fold in enumerate(spec["folds"]) if k != args.fold for i in fold]
        parts = {
            "train": [by_id[i] for i in train_ids if i in by_id],
            "eval": [by_id[i] for i in spec["folds"][args.fold] if i in by_id],
            "test": [by_id[i] for i in spec["test"]],
        }
    else:
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        # PubMedQA's own proportions (450 / 50 / 500); reports keep most notes for training.
        fractions = (0.45, 0.05) if args.task == "pubmedqa" else (0.9, 0.05)
        n_train = int(len(shuffled) * fractions[0])
        n_eval = max(1, int(len(shuffled) * fractions[1]))
        parts = {
            "train": shuffled[:n_train],
            "eval": shuffled[n_train : n_train + n_eval],
            "test": shuffled[n_train + n_eval :],
        }
    if args.max_train_samples is not None:
        parts["train"] = random.Random(seed).sample(parts["train"], min(args.max_train_samples, len(parts["train"])))
    if args.max_eval_samples is not None:
        parts["eval"] = stratified_sample(parts["eval"], args.max_eval_samples, seed)
    if args.max_test_samples is not None:
        parts["test"] = stratified_sample(parts["test"], args.max_test_samples, seed)
    return parts


def format_row(row: dict[str, Any], args: MedsftArguments) -> dict[str, str] | None:
    """The task's pure formatting, chosen by the recipe: the one function training and evaluation share."""
    if args.task == "pubmedqa":
        return pubmedqa.format_row(row, args.prompt_style, args.include_long_answer)
    return report.format_row(row, args.section)


@dataclass
class EncodeStats:
    rows: int = 0
    kept: int = 0
    truncated: int = 0  # context shortened so the answer fits
    dropped: int = 0  # the answer itself cannot fit in max_length
    skipped: int = 0  # the task could not format the row (e.g. the named section is absent)
    lengths: list[int] = field(default_factory=list)


def truncate_left(ids: list[int], room: int, bos_token_id: int | None) -> list[int]:
    """The last `room` tokens of a prompt, keeping a leading BOS: the end (question, answer cue) survives."""
    if len(ids) <= room:
        return ids
    keep_bos = 1 if ids and ids[0] == bos_token_id else 0
    return ids[:keep_bos] + ids[len(ids) - (room - keep_bos) :]


def encode_example(example: dict[str, str], tokenizer, max_length: int | None, lm: bool = False) -> tuple[dict, str]:
    """Token ids with the completion (and EOS) trained and the prompt masked; the prompt is cut from the left
    when the pair is too long, so the answer and the question nearest it survive. Returns (row, status) where
    status is "ok", "truncated" or "dropped"."""
    prompt_ids = tokenizer(example["prompt"])["input_ids"]  # "" gives [] or [BOS]
    completion_ids = tokenizer(example["completion"], add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    status = "ok"
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        status = "truncated"
        if lm:  # plain language modelling: the note itself is the text, keep its start
            completion_ids = completion_ids[: max_length - len(prompt_ids)]
        else:
            keep_bos = 1 if prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else 0
            if max_length - len(completion_ids) - keep_bos < 1:
                return {}, "dropped"
            prompt_ids = truncate_left(prompt_ids, max_length - len(completion_ids), tokenizer.bos_token_id)
    input_ids = prompt_ids + completion_ids
    return {"input_ids": input_ids, "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}, status


def is_language_modelling(args: MedsftArguments) -> bool:
    """The whole note is the completion: truncation keeps its start instead of dropping it."""
    return args.task == "report" and args.section is None


def encode(rows: list[dict[str, Any]], args: MedsftArguments, tokenizer, max_length: int | None):
    """rows -> (datasets.Dataset of input_ids / completion_mask, EncodeStats)."""
    from datasets import Dataset

    stats, out = EncodeStats(rows=len(rows)), []
    lm = is_language_modelling(args)
    for row in rows:
        example = format_row(row, args)
        if example is None:
            stats.skipped += 1
            continue
        encoded, status = encode_example(example, tokenizer, max_length, lm=lm)
        if status == "dropped":
            stats.dropped += 1
            continue
        stats.truncated += status == "truncated"
        stats.lengths.append(len(encoded["input_ids"]))
        out.append(encoded)
    stats.kept = len(out)
    return Dataset.from_list(out) if out else None, stats


def label_counts(rows: list[dict[str, Any]]) -> Counter:
    return Counter(r.get("final_decision") for r in rows)


def summarize(dataset, stats: EncodeStats) -> dict[str, Any]:
    """What training will see: token-length statistics, row fates, tokens in all and trained."""
    import statistics

    masks = dataset["completion_mask"] if dataset is not None else []
    lengths = sorted(stats.lengths)
    p95 = lengths[min(len(lengths) - 1, int(round(0.95 * (len(lengths) - 1))))] if lengths else 0
    return {
        "rows": stats.rows, "kept": stats.kept, "truncated": stats.truncated, "dropped": stats.dropped,
        "skipped": stats.skipped, "all_masked": sum(1 for m in masks if not any(m)),
        "length": {"min": lengths[0] if lengths else 0, "median": statistics.median(lengths) if lengths else 0,
                   "p95": p95, "max": lengths[-1] if lengths else 0},
        "tokens": sum(lengths), "trained_tokens": sum(sum(m) for m in masks),
    }
