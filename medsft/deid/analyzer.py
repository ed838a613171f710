"""Presidio's AnalyzerEngine, offline: its own e-mail, IP and SSN recognizers beside medsft's clinical ones
(recognizers.py; Presidio's URL and phone recognizers are left out: on notes whose sentences lack the space after
their period they read "mother.The" as a web address, and "168/74" as a phone number), on a blank spaCy English pipeline (tokens only: no model is downloaded, and medsft's
recognizers need no named-entity model), with tldextract's bundled list of domains instead of the one Presidio's
e-mail recognizer would fetch. `find` gives each text's identifiers as non-overlapping spans in medsft's categories;
`presidio_defaults` is what a user gets from Presidio's own predefined recognizers offline (the bench compares)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from medsft.deid.categories import PRESIDIO

SCORE = 0.3  # Presidio's own weakest guesses (a 7-digit number as a driver's licence: 0.01) are left out
PRIORITY = ("DATE", "SSN", "PHONE", "EMAIL", "MRN", "CITY", "NAME")  # of two equal spans, the first in this order


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    category: str


def _offline() -> None:
    """tldextract (Presidio's e-mail check) reads its bundled snapshot of the public suffix list, never the web."""
    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    email_recognizer.tldextract.extract = offline  # the module-level function Presidio calls


def _nlp_engine():
    import spacy
    from presidio_analyzer.nlp_engine import SlimSpacyNlpEngine

    class BlankEnglish(SlimSpacyNlpEngine):
        """Presidio's slim engine on spaCy's blank English tokenizer: tokens for context words, no model to load."""

        def __init__(self):
            super().__init__(models=[{"lang_code": "en", "model_name": "blank"}], auto_download=False)

        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankEnglish()
    engine.load()
    return engine


@cache
def analyzer():
    """medsft's engine: Presidio's pattern recognizers for what they find well, and medsft's clinical ones."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import EmailRecognizer, IpRecognizer, UsSsnRecognizer

    from medsft.deid.recognizers import clinical

    _offline()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in [EmailRecognizer(), IpRecognizer(), UsSsnRecognizer(), *clinical()]:
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=_nlp_engine(), registry=registry, supported_languages=["en"])


@cache
def presidio_defaults():
    """Presidio's every predefined recognizer, as a user would run it with no network (blank spaCy: no NER model)."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

    _offline()
    engine = _nlp_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(nlp_engine=engine, languages=["en"])
    return AnalyzerEngine(nlp_engine=engine, registry=registry, supported_languages=["en"])


def _end(text: str, result) -> int:
    """A web or e-mail address ends before the punctuation of the sentence it ends."""
    end = result.end
    if PRESIDIO.get(result.entity_type, result.entity_type) in ("URL", "EMAIL"):
        while end > result.start and text[end - 1] in ".,;:!?)]'\"":
            end -= 1
    return end


def resolved(text: str, results) -> list[Span]:
    """Presidio's results in medsft's categories, overlaps resolved: the longer span wins, then the higher score."""
    spans = [(r.start, _end(text, r), PRESIDIO.get(r.entity_type, r.entity_type), r.score) for r in results
             if r.end > r.start]
    spans.sort(key=lambda s: (-(s[1] - s[0]), -s[3], PRIORITY.index(s[2]) if s[2] in PRIORITY else 99, s[0]))
    taken: list[tuple[int, int]] = []
    out = []
    for start, end, category, _ in spans:
        if all(end <= a or start >= b for a, b in taken):
            taken.append((start, end))
            out.append(Span(start, end, category))
    return sorted(out, key=lambda s: s.start)


@cache
def detector_version() -> dict[str, str]:
    """What found the identifiers: medsft's and the libraries' versions and a digest of the recognizers' source."""
    import hashlib
    from importlib import metadata
    from pathlib import Path

    import medsft

    here = Path(__file__).parent
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
    out = {"medsft": medsft.__version__, "recognizers_sha256": digest}
    for name in ("presidio-analyzer", "presidio-anonymizer", "faker"):
        out[name] = metadata.version(name)
    return out


def find(text: str) -> list[Span]:
    """The identifiers in `text`, in medsft's categories, not overlapping."""
    if not text.strip():
        return []
    return resolved(text, analyzer().analyze(text, language="en", score_threshold=SCORE))
