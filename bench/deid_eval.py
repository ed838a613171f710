"""De-identification measured: medsft's per-category recall and precision on the synthetic annotated corpus
(tests/deid_corpus.py: every Safe Harbor category that occurs in notes, planted in varied forms, with medical
eponyms beside them), entity-level (i2b2 2014's relaxed and strict match) and token-level, side by side with what a
user gets first: Presidio's own predefined recognizers run offline (a blank spaCy pipeline: its named-entity model
cannot be downloaded here), and philter-lite where it installs; then medsft's speed on the MTSamples notes (shared
data) on one core, with peak memory.

    python bench/deid_eval.py [--notes 500] [--seed 0] [--mtsamples 400]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import deid_corpus  # noqa: E402
from common import DATA  # noqa: E402

from medsft.deid import analyzer  # noqa: E402


def medsft_spans(text: str) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.category) for s in analyzer.find(text)]


def presidio_spans(text: str) -> list[tuple[int, int, str]]:
    results = analyzer.presidio_defaults().analyze(text, language="en")
    return [(s.start, s.end, s.category) for s in analyzer.resolved(text, results)]


PHILTER_TYPES = {"NAME": "NAME", "DATE": "DATE", "AGE": "AGE", "ADDRESS": "ADDRESS", "CITY": "CITY", "ZIP": "ZIP",
                 "PHONE": "PHONE", "FAX": "PHONE", "EMAIL": "EMAIL", "SSN": "SSN", "URL": "URL", "IP": "IP",
                 "HOSPITAL": "HOSPITAL", "ORGANIZATION": "HOSPITAL", "LOCATION": "CITY"}


def philter_spans():
    """philter-lite's finder with its own configuration, or (None, why) where it cannot run here."""
    try:
        import importlib.resources

        import philter_lite
    except ImportError:
        return None, "not installed (pip install philter-lite)"
    config = importlib.resources.files("philter_lite") / "configs" / "philter_delta.toml"
    filters = philter_lite.load_filters(str(config))

    def find(text: str):
        _, _, tracker = philter_lite.detect_phi(text, filters)
        return [(p.start, p.stop, PHILTER_TYPES.get(p.phi_type, p.phi_type)) for p in tracker.phi]

    try:
        find("Mr. Okafor was seen on 03/14/2023.")
    except LookupError as e:  # NLTK's tagger, which philter-lite needs, is downloaded at run time
        return None, f"installed, but cannot run offline: {str(e).strip().splitlines()[1].strip()}"
    return find, ""


def table(notes, systems: dict) -> None:
    scored = {}
    for name, find in systems.items():
        start = time.perf_counter()
        predicted = [find(n.text) for n in notes]
        scored[name] = (deid_corpus.score(notes, predicted), len(notes) / (time.perf_counter() - start))
    names = list(systems)
    print("| category | entities | " + " | ".join(f"{n} recall | {n} precision | {n} token R / P" for n in names) + " |")
    print("| --- | ---: | " + " | ".join("---: | ---: | ---:" for _ in names) + " |")
    for category in sorted(scored[names[0]][0]["categories"]):
        mine = scored[names[0]][0]["categories"][category]
        cells = []
        for n in names:
            c = scored[n][0]["categories"].get(category)
            if c is None or c.get("entities", 0) == 0:  # a category the system never names
                cells.append("0.000 | - | -")
                continue
            cells.append(f"{c['recall']:.3f} (strict {c['strict_recall']:.3f}) | {_fmt(c['precision'])} | "
                         f"{c['token_recall']:.3f} / {_fmt(c['token_precision'])}")
        print(f"| {category} | {mine['entities']} | " + " | ".join(cells) + " |")
    for n in names:
        s, rate = scored[n]
        print(f"{n}: token-level recall {s['token_recall']:.3f}, precision {s['token_precision']:.3f} (any category); "
              f"eponyms untouched {s['eponyms_untouched'] * 100:.1f}% of {s['eponyms']}; {rate:.0f} notes/s")


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def speed(n: int) -> None:
    """Notes per second on the MTSamples notes, one core (the analyzer is single-threaded Python), peak RSS."""
    path = DATA / "reports" / "mtsamples.jsonl"
    if not path.is_file():
        print(f"MTSamples absent ({path}): speed not measured")
        return
    from medsft.deid.deidentifier import Deidentifier

    notes = [json.loads(line)["text"] for line in path.read_text().splitlines()[:n]]
    deid = Deidentifier("surrogate", seed=0)
    deid.row({"text": "warm up, Mr. Okafor"}, "w")  # Presidio, spaCy and Faker loaded before the clock
    start = time.perf_counter()
    found = 0
    for i, text in enumerate(notes):
        found += len(deid.row({"text": text}, str(i))[1])
    seconds = time.perf_counter() - start
    words = sum(len(t.split()) for t in notes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"MTSamples: {len(notes)} notes ({words / len(notes):.0f} words each), surrogate mode: {len(notes) / seconds:.1f} "
          f"notes/s on one core, {found} identifiers replaced; peak RSS {peak:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mtsamples", type=int, default=400)
    args = parser.parse_args()
    notes = deid_corpus.corpus(args.notes, args.seed)
    analyzer.find("warm up")
    analyzer.presidio_defaults()
    systems = {"medsft": medsft_spans, "presidio": presidio_spans}
    philter, why = philter_spans()
    if philter is not None:
        systems["philter-lite"] = philter
    else:
        print(f"philter-lite {why}: left out")
    print(f"{len(notes)} synthetic notes (seed {args.seed}), {sum(len(n.spans) for n in notes)} identifiers")
    table(notes, systems)
    speed(args.mtsamples)


if __name__ == "__main__":
    main()
