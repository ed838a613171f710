"""Where rows come from, with the dataset's own splits kept: hub datasets, local files and folders, a data_files
mapping, folders saved with `save_to_disk`, and the built-in synthetic generator.

`load(spec, task)` returns {split name: [(key, raw row)]}. A single file, or files whose names say no split, form
the "train" split (the `datasets` convention). `key` is the id of a JSON object keyed by id (the original PubMedQA
release), else a hash of the row's content: the same row has the same key in any file, split or order, so the ids
a run records (split_ids.json) still name its rows when the data is reordered or split another way."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from medsft.errors import UserError
from medsft.textfiles import parse_json, read_json, read_text

SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
# How file names say their split, as `datasets` reads them: train.jsonl, test-00000-of-00001.parquet, data/dev.csv
SPLIT_WORDS = {"train": "train", "training": "train", "test": "test", "testing": "test", "validation": "validation",
               "valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}
_WORD = re.compile(r"(?:^|[-_.])(" + "|".join(sorted(SPLIT_WORDS, key=len, reverse=True)) + r")(?=$|[-_.\d])")
NOT_DATA = ("splits.json",)  # split files, read by splits.py

Rows = list[tuple[str, dict]]



def is_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).suffix in SUFFIXES or Path(name).exists()


def split_of(path: Path, root: Path) -> str:
    """The split a data file's name (or a folder on its way from root) declares; "train" when none does."""
    for part in [path.stem, *reversed(path.relative_to(root).parts[:-1])]:
        match = _WORD.search(part.lower())
        if match:
            return SPLIT_WORDS[match.group(1)]
    return "train"


def read_file(path: Path) -> list[tuple[str | None, dict]] | None:
    """(key or None, row) for each row of one file; None for a JSON file that holds no rows (a label map)."""
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(read_text(path, "dataset").splitlines(), 1):
            if line.strip():  # blank lines between records, as some tools write them
                rows.append((None, parse_json(line, f"dataset {path} line {n}")))
        return rows
    if path.suffix == ".json":
        data = read_json(path, "dataset")
        if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
            return [(str(k), v) for k, v in data.items()]  # the original PubMedQA release: {pmid: item}
        if isinstance(data, list):
            return [(None, r) for r in data]
        if isinstance(data, dict) and not any(isinstance(v, (dict, list)) for v in data.values()):
            return None  # e.g. PubMedQA's test_ground_truth.json, {pmid: label}: not rows
        raise UserError(f"dataset {path} must hold a list of rows or an object of rows keyed by id")
    if path.suffix in (".csv", ".parquet"):
        import pyarrow.csv
        import pyarrow.parquet

        try:
            table = pyarrow.parquet.read_table(path) if path.suffix == ".parquet" else pyarrow.csv.read_csv(path)
            return [(None, r) for r in table.to_pylist()]
        except Exception as e:  # pyarrow raises many types for a malformed file
            raise UserError(f"dataset {path} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    raise UserError(f"dataset {path}: unsupported file type; use one of {', '.join(SUFFIXES)}")


def content_key(row: dict) -> str:
    return hashlib.sha1(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _keyed(splits: dict[str, list[tuple[str | None, dict]]]) -> dict[str, Rows]:
    return {name: [(key if key is not None else content_key(row), row) for key, row in rows] for name, rows in splits.items()}


def _files(paths: dict[str, list[Path]]) -> dict[str, Rows]:
    splits: dict[str, list] = {}
    for split, files in paths.items():
        for path in files:
            if not path.is_file():
                raise UserError(f"dataset file not found: {path} (data_files); give a path to a file")
            rows = read_file(path)
            if rows is not None:
                splits.setdefault(split, []).extend(rows)
    return _keyed(splits)


def _folder(path: Path, config: str | None) -> dict[str, Rows]:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():  # datasets' save_to_disk
        from datasets import Dataset, load_from_disk

        saved = load_from_disk(str(path))
        saved = {"train": saved} if isinstance(saved, Dataset) else saved
        return _keyed({name: [(None, r) for r in ds.to_list()] for name, ds in saved.items()})
    if config and (path / config).is_dir():  # the hub layout: one sub-folder per config
        return _folder(path / config, None)
    found: dict[str, list[Path]] = {}
    for file in sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.name not in NOT_DATA and p.is_file()):
        found.setdefault(split_of(file, path), []).append(file)
    splits = _files(found)
    if not splits:
        raise UserError(f"dataset folder {path} holds no {'/'.join(SUFFIXES)} file with rows")
    return splits


def _hub(name: str, config: str | None, data_files: Any) -> dict[str, Rows]:
    from datasets import load_dataset

    try:
        loaded = load_dataset(name, config, data_files=data_files)
    except Exception as e:  # offline, unknown id, gated: the hub client raises many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not load dataset '{name}' from the hub ({first}); for local data give a file path as dataset_name") from None
    return _keyed({split: [(None, r) for r in ds] for split, ds in loaded.items()})


def load(spec, task) -> dict[str, Rows]:
    """The dataset's rows by its own split names (see the module docstring)."""
    if spec.dataset_name == "synthetic":
        return _keyed({"train": [(None, r) for r in task.synthetic(spec.synthetic_size, spec.split_seed)]})
    if spec.data_files is not None and (spec.dataset_name is None or is_local(spec.dataset_name)):
        files = spec.data_files if isinstance(spec.data_files, dict) else {"train": spec.data_files}
        base = Path(spec.dataset_name).expanduser() if spec.dataset_name else Path(".")
        base = base if base.is_dir() else base.parent
        return _files({split: [base / Path(p).expanduser() for p in ([v] if isinstance(v, str) else v)]
                       for split, v in files.items()})
    if spec.dataset_name is None:
        raise UserError("no data: set dataset_name (a hub id, a local file or folder, or synthetic), data_files or dataset_mixture")
    if is_local(spec.dataset_name):
        path = Path(spec.dataset_name).expanduser()
        if not path.exists():
            raise UserError(f"dataset file not found: {path} (dataset_name); give a path to a file or folder")
        if path.is_dir():
            return _folder(path, spec.dataset_config)
        rows = read_file(path)
        if rows is None:
            raise UserError(f"dataset {path} holds no rows (an object of plain values); give the data file")
        return _keyed({"train": rows})
    return _hub(spec.dataset_name, spec.dataset_config, spec.data_files)


def beside(spec) -> Path | None:
    """A splits.json next to local data (or in its folder): the documented layout of PubMedQA's release."""
    if spec.dataset_name in (None, "synthetic") or not is_local(spec.dataset_name):
        return None
    path = Path(spec.dataset_name).expanduser()
    candidate = (path if path.is_dir() else path.parent) / "splits.json"
    return candidate if candidate.is_file() else None
