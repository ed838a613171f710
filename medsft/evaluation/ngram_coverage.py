"""Test items found in training rows, measured by how much of each item is covered (Llama 2's method): the share
of an item's words that lie inside word sequences of `ngram` words also found in some training row. One shared
13-word sequence is not contamination: exam boilerplate ("which of the following is the most likely cause of this
patient's") is shared by unrelated items; an item at or above `threshold` coverage is.

Text is normalized alike on both sides: lower case, words of letters and digits only (punctuation and whitespace
gone), single letters dropped (option letters: "A.", "(b)"; the article "a" goes too, on both sides). The items'
n-grams are hashed into one sorted array; training rows stream past it in chunks, so memory is bounded by the items
and one chunk, and time is linear in the training words (numpy's rolling hash, a sorted membership test per chunk).
Python's string hash is salted per process: the hashes are compared within one process only. A run's use of it
(which rows, which items, the result kept with the prepared data) is contamination.py's."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from medsft.evaluation.sharing import Track, no_track

WORD = re.compile(r"[^\W_]+")
PRIME = np.uint64(1_000_003)
CHUNK_WORDS = 4_000_000  # training words hashed at once: ~100 MB of arrays


def words(text: str) -> list[str]:
    """The text normalized: lower-case words of letters and digits, single letters (option labels) dropped."""
    return [w for w in WORD.findall(text.lower()) if len(w) > 1 or w.isdigit()]


def _ids(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(every text's word hashes, concatenated; each text's start offset, and the end)."""
    per = [words(t) for t in texts]
    starts = np.zeros(len(per) + 1, dtype=np.int64)
    np.cumsum([len(w) for w in per], out=starts[1:])
    flat = np.fromiter((hash(w) for ws in per for w in ws), dtype=np.int64, count=int(starts[-1]))
    return flat.view(np.uint64), starts


def _ngrams(ids: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, position, text index) of every n-word sequence lying within one text."""
    m = len(ids) - n + 1
    if m <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty.view(np.uint64), empty, empty
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):  # the rolling hash wraps modulo 2**64 by design
        for k in range(n):
            h = h * PRIME + ids[k : k + m]
    position = np.arange(m)
    text = np.searchsorted(starts, position, side="right") - 1
    inside = position + n <= starts[text + 1]
    return h[inside], position[inside], text[inside]


@dataclass
class Found:
    """The check's answer. `share[i]`: the share of item i's words covered; `rows[i]`: the training rows (their
    keys) that make item i contaminated, the fewest whose removal takes it below the threshold."""

    ngram: int
    threshold: float
    share: list[float]
    words: list[int]
    training_rows: int = 0
    rows: dict[int, list] = field(default_factory=dict)

    @property
    def contaminated(self) -> list[int]:
        return [i for i, s in enumerate(self.share) if s >= self.threshold]

    @property
    def unchecked(self) -> list[int]:
        """Items shorter than one sequence: nothing of theirs can be matched."""
        return [i for i, n in enumerate(self.words) if n < self.ngram]


def _covered(positions: np.ndarray, n: int, size: int) -> np.ndarray:
    """Which of `size` words lie inside an n-word sequence starting at one of `positions`."""
    diff = np.zeros(size + 1, dtype=np.int64)
    np.add.at(diff, positions, 1)
    np.add.at(diff, positions + n, -1)
    return np.cumsum(diff[:-1]) > 0


def check(items: list[str], training: Iterable[tuple[object, str]], ngram: int = 13, threshold: float = 0.5,
          track: Track = no_track, total: int = 0) -> Found:
    """Each item's coverage by the training rows ((key, text) pairs, streamed: `track(rows, total)` shows them
    pass), and the rows behind each contaminated item."""
    ids, starts = _ids(items)
    item_hash, item_pos, item_of = _ngrams(ids, starts, ngram)
    keys = np.unique(item_hash)
    hit_hash, hit_row, row_keys = [], [], []
    texts: list[str] = []
    pending = 0

    def flush():
        nonlocal texts, pending
        if texts:
            t_ids, t_starts = _ids(texts)
            h, _, row = _ngrams(t_ids, t_starts, ngram)
            hit = np.isin(h, keys)
            hit_hash.append(h[hit])
            hit_row.append(row[hit] + len(row_keys) - len(texts))
        texts, pending = [], 0

    for key, text in track(training, total):
        row_keys.append(key)
        texts.append(text)
        pending += len(text) // 6  # ~ words, to bound a chunk without splitting the text twice
        if pending >= CHUNK_WORDS:
            flush()
    flush()
    hashes = np.concatenate(hit_hash) if hit_hash else np.zeros(0, dtype=np.uint64)
    rows = np.concatenate(hit_row) if hit_row else np.zeros(0, dtype=np.int64)
    matched = np.isin(item_hash, hashes)
    covered = _covered(item_pos[matched], ngram, len(ids))
    counts = np.diff(starts)
    share = [float(covered[starts[i] : starts[i + 1]].mean()) if counts[i] else 0.0 for i in range(len(items))]
    found = Found(ngram, threshold, share, counts.tolist(), len(row_keys))
    behind = _behind(found.contaminated, item_hash, item_pos - starts[item_of], item_of, counts, hashes, rows, ngram,
                     threshold)
    found.rows = {i: [row_keys[r] for r in found_rows] for i, found_rows in behind.items()}
    return found


def _behind(items: list[int], item_hash, item_pos, item_of, counts, hashes, rows, n, threshold) -> dict[int, list[int]]:
    """For each contaminated item, the rows that make it so: greedily the row covering most of it, until the rest
    cover less than the threshold (a planted copy goes first and alone; boilerplate it shares with others stays).
    One join of the items' sequences with the training hits, by hash (sorted, vectorised)."""
    if not items:
        return {}
    mine = np.isin(item_of, items)
    ih, ip, io = item_hash[mine], item_pos[mine], item_of[mine]
    order = np.argsort(ih, kind="stable")
    ih, ip, io = ih[order], ip[order], io[order]
    keep = np.isin(hashes, ih)
    hh, hr = hashes[keep], rows[keep]
    left, right = np.searchsorted(ih, hh, "left"), np.searchsorted(ih, hh, "right")
    width = right - left  # each hit joins every sequence of the items equal to it
    joined = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width) + np.repeat(left, width)
    item, pos, row = io[joined], ip[joined], np.repeat(hr, width)
    order = np.lexsort((row, item))  # grouped by item, then by row: each group one slice
    item, pos, row = item[order], pos[order], row[order]
    cuts = np.flatnonzero((np.diff(item) != 0) | (np.diff(row) != 0)) + 1
    groups: dict[int, dict[int, np.ndarray]] = {}
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(item)]):
        if hi > lo:
            i = int(item[lo])
            groups.setdefault(i, {})[int(row[lo])] = _covered(pos[lo:hi], n, int(counts[i]))
    out: dict[int, list[int]] = {}
    for i in items:
        by_row = groups.get(i, {})
        removed: list[int] = []
        while by_row and np.logical_or.reduce(list(by_row.values())).mean() >= threshold:
            best = max(by_row, key=lambda r: (by_row[r].sum(), -r))
            removed.append(best)
            del by_row[best]
        out[i] = removed
    return out
