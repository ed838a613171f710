"""Data prepared once: a dataset's rows by role, and a role's tokenized rows, kept on disk under a key made of
everything that changes them, and read back by `train`, `eval`, `preview`, `cv` and every fold.

The rows' key: the dataset's keys (task, columns, splits, caps, task options), its files' content (a hash of their
bytes; a hub dataset by its id and config), the ids a run recorded, and the code that reads and splits rows. The
tokenized rows' key adds the tokenizer (its whole pipeline and vocabulary), its chat template and template keywords,
max_length and the loss masks. The tokenized rows are an Arrow file, memory-mapped when read, never a Python list.
Under several processes the main process prepares and writes while the others wait, then read what it wrote: the
data is tokenized once. `$MEDSFT_DATA_CACHE` moves the cache (default: `data/` in medsft's cache folder); `off`
turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import Any, Callable

FORMAT = 1  # bump when what is written changes shape


def folder() -> Path | None:
    """Where prepared data is kept; None when the cache is off."""
    given = os.environ.get("MEDSFT_DATA_CACHE")
    if given == "off":
        return None
    if given:
        return Path(given).expanduser()
    return Path(os.environ.get("MEDSFT_CACHE", Path.home() / ".cache" / "medsft")) / "data"  # beside the embedded model


@cache
def code_version() -> str:
    """medsft's version and the source of the modules that read, de-identify, split, format and tokenize rows."""
    import medsft

    root = Path(medsft.__file__).parent
    whole = hashlib.sha256(f"{getattr(medsft, '__version__', '')}:{FORMAT}".encode())
    for path in sorted([*(root / "data").glob("*.py"), *(root / "deid").glob("*.py"), *(root / "tasks").glob("*.py"),
                        *(root / "tasks").glob("*.json")]):
        whole.update(path.name.encode() + path.read_bytes())
    return whole.hexdigest()[:16]


def digest(value: Any) -> str:
    """A cache key: the digest of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _file_digest(path: Path) -> str:
    whole = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            whole.update(block)
    return whole.hexdigest()


def sources_digest(spec) -> dict[str, Any]:
    """What the dataset's rows are read from: each local file's content, or a hub dataset's id and config."""
    from medsft.data import sources

    names = []
    if spec.dataset_name and spec.dataset_name != "synthetic" and sources.is_local(spec.dataset_name):
        names.append(Path(spec.dataset_name).expanduser())
    files = spec.data_files if isinstance(spec.data_files, dict) else {"train": spec.data_files} if spec.data_files else {}
    base = Path(spec.dataset_name).expanduser() if spec.dataset_name and sources.is_local(spec.dataset_name) else Path(".")
    base = base if base.is_dir() else base.parent
    for value in files.values():
        names += [base / Path(p).expanduser() for p in ([value] if isinstance(value, str) else value)]
    if spec.split_file:
        names.append(Path(spec.split_file).expanduser())
    found = {}
    for name in names:
        paths = sorted(p for p in name.rglob("*") if p.is_file()) if name.is_dir() else [name]
        found.update({str(p.resolve()): _file_digest(p) for p in paths if p.is_file()})
    return {"files": found, "hub": None if found or spec.dataset_name == "synthetic" else [spec.dataset_name, spec.dataset_config]}


def rows_key(spec, saved: Any) -> str:
    return digest({"spec": asdict(spec), "sources": sources_digest(spec), "saved": saved, "code": code_version()})


def tokenizer_digest(tokenizer) -> str:
    """The tokenizer as it tokenizes: its whole pipeline and vocabulary, special tokens, template and keywords."""
    from medsft.data.templates import kwargs_of

    backend = getattr(tokenizer, "backend_tokenizer", None)
    pipeline = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return digest({"pipeline": hashlib.sha256(pipeline.encode()).hexdigest(), "class": type(tokenizer).__name__,
                    "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
                    "added": {str(i): str(t) for i, t in tokenizer.added_tokens_decoder.items()},
                    "template": getattr(tokenizer, "chat_template", None), "kwargs": kwargs_of(tokenizer),
                    "bos": getattr(tokenizer, "add_bos_token", None)})


def encoded_key(rows_keys: list[str], role: str, weights: list, encoder) -> str:
    return digest({"rows": rows_keys, "role": role, "weights": weights, "tokenizer": tokenizer_digest(encoder.tokenizer),
                    "max_length": encoder.max_length, "completion_only": encoder.completion_only,
                    "assistant_only": encoder.assistant_only, "code": code_version()})


@contextmanager
def _main_first():
    """The main process runs the block first (and writes); the others wait for it, then run it (and read). The main
    process reaches the barrier even when it fails (bad data: one line), so that the others go on and fail alike
    rather than wait for ever."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # not launched among several (accelerate and torchrun set it)
        yield
        return
    from accelerate import PartialState

    state = PartialState()
    if not state.is_main_process:
        _patient_barrier()
    try:
        yield
    finally:
        if state.is_main_process:
            _patient_barrier()


_PATIENT: list = []  # the barrier's own process group, made once


def _patient_barrier() -> None:
    """A barrier that outlasts ddp_timeout: the main process preparing the data (a download, a large corpus
    tokenized) is at work, not stuck, however long it takes; one that dies is ended by the launcher, which ends the
    others. Its own gloo group, whose timeout is a day, so the process group's stays what the recipe says."""
    from datetime import timedelta

    import torch.distributed as dist

    if not _PATIENT:
        _PATIENT.append(dist.new_group(backend="gloo", timeout=timedelta(days=1)))
    dist.barrier(group=_PATIENT[0])


def _write(target: Path, write: Callable[[Path], None]) -> None:
    """All or nothing: written beside the target, then renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        os.replace(tmp, target) if not target.exists() else shutil.rmtree(tmp)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_json(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """A JSON value of `kind` (a dataset's rows by role, a contamination check) read from the cache or computed (and
    kept): the main process computes, the others read what it wrote."""
    root = folder()
    if root is None:
        return compute()
    target, name = root / kind / key, f"{kind}.json"
    with _main_first():
        if (target / name).is_file():
            return json.loads((target / name).read_text())
        value = compute()
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):  # a value JSON cannot hold as it is (a date, bytes): computed again each time
            return value
        _write(target, lambda tmp: (tmp / name).write_text(text))
        return value


def cached_rows(key: str, compute: Callable[[], dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """A dataset's rows by role, read from the cache or computed (and kept)."""
    return cached_json("rows", key, compute)


def cached_encoded(key: str, compute: Callable[[], tuple[Any, Any]]):
    """(the tokenized rows, memory-mapped, or None; their EncodeStats), read from the cache or computed (and kept)."""
    from datasets import load_from_disk

    from medsft.data.encoding import EncodeStats

    root = folder()
    if root is None:
        return compute()
    target = root / "encoded" / key
    with _main_first():
        if (target / "stats.json").is_file():
            stats = EncodeStats(**json.loads((target / "stats.json").read_text()))
            return (load_from_disk(str(target / "rows")) if (target / "rows").is_dir() else None), stats
        dataset, stats = compute()

        def write(tmp: Path) -> None:
            if dataset is not None:
                dataset.flatten_indices().save_to_disk(str(tmp / "rows"))
            (tmp / "stats.json").write_text(json.dumps(asdict(stats)))

        _write(target, write)
        if (target / "rows").is_dir():  # read back memory-mapped, as later runs read it
            return load_from_disk(str(target / "rows")), stats
        return dataset, stats
