"""The contamination check at scale: 200,000 training rows against 5,000 test items, its time and peak memory.

    python bench/contamination_check.py [--rows 200000] [--items 5000] [--words 120]

Test items are drawn from MedQA's text and training rows from MedMCQA's and medical MMLU's (under $MEDSFT_DATA/mcq;
synthetic words where absent), runs of real text and words drawn, `--words` a row on average; 50 of the items are planted in
the training rows (their text lower-cased, options reordered), so the run also shows they are found. Prints the
check's wall time, the time per million training words, the peak resident memory during the check and its
increase over what the data itself holds, and the scaling: the same check on a quarter of the rows, side by side
(linear in the rows: about 4x the time, not 16x).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import DATA  # noqa: E402

from medsft.evaluation import ngram_coverage  # noqa: E402


def corpus(names: tuple[str, ...]) -> list[str]:
    words: list[str] = []
    for name in names:
        path = DATA / "mcq" / name
        if path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                words += (row["question"] + " " + " ".join(row["options"].values())).split()
    return words or [f"{names[0][:3]}{i}" for i in range(20_000)]


def text(rng: random.Random, words: list[str], n: int) -> str:
    start = rng.randrange(len(words) - n)  # a run of real text, as rows are, not independent draws
    return " ".join(words[start : start + n // 2] + rng.sample(words, n - n // 2))


class Peak:
    """The process's largest RSS while the block runs (sampled every 20 ms), and its RSS before."""

    def __enter__(self):
        import psutil

        self.process = psutil.Process()
        self.before = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(items: list[str], rows: list[tuple[str, str]]) -> tuple[float, Peak, ngram_coverage.Found]:
    with Peak() as peak:
        start = time.perf_counter()
        found = ngram_coverage.check(items, rows)
        seconds = time.perf_counter() - start
    return seconds, peak, found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--words", type=int, default=120)
    args = parser.parse_args()
    # test items from MedQA's words, training rows from MedMCQA's and medical MMLU's: two exams, as a real check is
    rng, tested, trained = random.Random(0), corpus(("medqa.jsonl",)), corpus(("medmcqa.jsonl", "mmlu.jsonl"))
    items = [text(rng, tested, rng.randint(args.words // 2, args.words * 3 // 2)) for _ in range(args.items)]
    rows = [(f"row{i}", text(rng, trained, rng.randint(args.words // 2, args.words * 3 // 2))) for i in range(args.rows)]
    planted = rng.sample(range(args.items), 50)
    for n, i in enumerate(planted):
        sentences = items[i].split(" ")
        rows[n * (args.rows // 50)] = (f"planted{i}", " ".join(sentences[5:]).lower() + " " + " ".join(sentences[:5]))
    total_words = sum(len(t.split()) for _, t in rows)
    quarter_seconds, _, _ = measure(items, rows[: args.rows // 4])
    seconds, peak, found = measure(items, rows)
    hit = sum(i in found.contaminated for i in planted)
    print(f"{args.rows:,} training rows ({total_words / 1e6:.1f}M words) against {args.items:,} test items, ngram 13:")
    print(f"  time {seconds:.1f} s ({seconds / total_words * 1e6:.2f} s per million training words)")
    print(f"  peak RSS {peak.peak / 2**30:.2f} GiB, {(peak.peak - peak.before) / 2**20:.0f} MiB above the data's own")
    print(f"  planted items found: {hit} of {len(planted)}; contaminated in all: {len(found.contaminated)}")
    print(f"  a quarter of the rows: {quarter_seconds:.1f} s; all / quarter = {seconds / quarter_seconds:.2f}x (linear: 4x)")


if __name__ == "__main__":
    main()
