"""medsft's clinical recognizers, Presidio EntityRecognizers beside its own (e-mail, phone, URL, IP, SSN): what its
defaults miss in notes, by pattern and context, without a language model. Each pattern's identifier is one group of
it (the cue stays: "MRN: 4482913" reports 4482913).

- NAME: after a title (Mr., Dr. Nguyen-Tran), a label (Pt: J. Smith, Patient name:), a relation or role (his son
  Tom, seen by, referred by, wife), in LAST, FIRST M form (SMITH, JOHN A), or a known given name and a capitalized
  word (Maria Lopez); then every other mention of a word found so in the same text. A word followed by the medical
  noun it names (Parkinson's disease, Babinski sign) is an eponym, never a name.
- DATE (dates.py), AGE over 89, street ADDRESS, CITY before a state, ZIP after one, and the numbers notes label:
  MRN, ACCOUNT, HEALTH_PLAN, LICENSE, DEVICE; PHONE and fax, SSN, URL, IP and EMAIL by their shapes too; HOSPITAL
  names ending in Hospital, Medical Center, Clinic and the like (a department's clinic is not one)."""

from __future__ import annotations

import re

from presidio_analyzer import EntityRecognizer, RecognizerResult

from medsft.deid import dates
from medsft.deid.names import EPONYMS, NOT_NAMES, eponym_here, given_names

CAP = r"(?:(?:[A-Z][a-z]+|[DO]['’][A-Z][a-z]+)(?:[A-Z][a-z]+)*(?:['’-][A-Z][a-z]+)*)"  # Okafor, McDonald, O'Brien, Nguyen-Tran
UPPER = r"(?:[A-Z]{2,}(?:['’-][A-Z]{2,})*)"
NAME_WORD = rf"(?:{CAP}|[A-Z]\.?)"
TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Doctor|Nurse|Sister|Father|Rev)\.?"
RELATION = (r"(?:seen by|referred by|accompanied by|evaluated by|examined by|discussed with|spoke with|per|attending|"
            r"PCP|primary care (?:physician|provider)|physician|surgeon|provider|dictated by|signed by|transcribed by|"
            r"cc|wife|husband|spouse|partner|son|daughter|mother|father|brother|sister|grandson|granddaughter|"
            r"grandmother|grandfather|nephew|niece|aunt|uncle|cousin|friend|neighbou?r|caregiver|guardian|"
            r"fianc[ée]e?|boyfriend|girlfriend|roommate|landlord|employer)")
STATES = ("Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|"
          "Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|"
          "Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York|North Carolina|"
          "North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas|"
          "Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming|AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|"
          "IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|"
          "WA|WV|WI|WY")
STREET = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|"
          r"Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Alley|Row|Crescent|Close|Pike|Turnpike)")
UNIT = r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Room|Rm|Fl|Floor|#)\.?\s*#?\s*[A-Za-z0-9-]+)?"
FACILITY = (r"(?:Regional Medical Center|Medical Center|Medical Centre|Memorial Hospital|Children's Hospital|"
            r"General Hospital|Hospital|Health Center|Health Centre|Health System|Infirmary|Clinic|Nursing Home|"
            r"Rehabilitation Center|Rehab Center|Care Center|Surgical Center|Surgery Center|Cancer Center|"
            r"Urgent Care|Sanatorium|Hospice)")
# a department or specialty before "Clinic" names no place
DEPARTMENTS = frozenset("""
Cardiology Oncology Neurology Surgery Surgical Radiology Urology Nephrology Dermatology Psychiatry Pediatric Pediatrics
Orthopedic Orthopedics Gastroenterology GI Pulmonary Pulmonology Endocrine Endocrinology Diabetes Rheumatology
Hematology Obstetrics Gynecology OB GYN Ophthalmology Eye ENT Otolaryngology Allergy Immunology Infectious Disease
Pain Sleep Wound Vascular Transplant Fertility Anticoagulation Coumadin Heart Lung Kidney Liver Breast Spine Sports
Walk-in Outpatient Inpatient Primary Care Family Medicine Internal Resident Residents Teaching Free Mental Health
Behavioral Dental Prenatal Well-baby Travel Vaccine Memory Movement Disorders Headache Epilepsy Stroke Asthma COPD
HIV Hepatitis Methadone Suboxone Addiction Rehabilitation Physical Therapy Occupational Speech Hearing Audiology
Podiatry Foot Hand Plastic Cosmetic Bariatric Weight Nutrition Lipid Hypertension Heart-failure The A An This That
Our Your His Her Their Same Local Community University Emergency Management Renal Lymphedema Strabismus Chiropractic
Rehab Physicians Services Medicine Therapy Care Wellness Specialty Surgical Procedure Infusion Dialysis Imaging
""".split())


def _results(category: str, spans, score: float = 0.85) -> list[RecognizerResult]:
    return [RecognizerResult(category, start, end, score) for start, end in spans]


class Patterns(EntityRecognizer):
    """One category found by regular expressions, each reporting one of its groups ("id", else the whole match)."""

    def __init__(self, category: str, patterns: list[str], flags: int = 0, check=None):
        self.patterns = [re.compile(p, flags) for p in patterns]
        self.check = check  # (the match) -> whether it is one
        super().__init__(supported_entities=[category], name=f"medsft {category}")

    def load(self) -> None:
        pass

    def spans(self, text: str):
        for pattern in self.patterns:
            for m in pattern.finditer(text):
                group = "id" if "id" in pattern.groupindex else 0
                if m.group(group) and (self.check is None or self.check(m)):
                    yield m.start(group), m.end(group)

    def analyze(self, text, entities, nlp_artifacts=None):
        return _results(self.supported_entities[0], self.spans(text))


class Dates(EntityRecognizer):
    def __init__(self):
        super().__init__(supported_entities=["DATE"], name="medsft DATE")

    def load(self) -> None:
        pass

    def analyze(self, text, entities, nlp_artifacts=None):
        return _results("DATE", ((f.start, f.end) for f in dates.find(text)))


class Names(EntityRecognizer):
    """Names by their cues (module docstring), then every other mention of a word of theirs."""

    CUED = [
        re.compile(rf"\b{TITLE}\s+(?P<id>{NAME_WORD}(?:\s+{NAME_WORD}){{0,2}})"),
        re.compile(rf"\b(?:Pt|Patient|Name|Patient name|Pt name|Resident|Client|Member|Insured|Guarantor)\s*[:#-]\s*"
                   rf"(?P<id>{NAME_WORD}(?:\s+{NAME_WORD}){{0,3}})"),
        re.compile(rf"\b(?i:{RELATION})\b,?\s+(?:(?:is|was|named|called)\s+)?(?:{TITLE}\s+)?"
                   rf"(?P<id>{CAP}(?:\s+{NAME_WORD}){{0,2}})"),
        re.compile(rf"\b(?P<id>{UPPER},\s*{UPPER}(?:\s+[A-Z]\.?)?)(?![A-Za-z])"),
        re.compile(rf"\b(?P<id>{CAP},\s*{CAP}(?:\s+[A-Z]\.)?)(?=\s|$|[,;.])"),
        re.compile(rf"\b(?P<id>{CAP}(?:\s+[A-Z]\.?)?\s+{CAP}(?:-{CAP})?)\b"),
    ]

    def __init__(self):
        super().__init__(supported_entities=["NAME"], name="medsft NAME")
        self.given = given_names()

    def load(self) -> None:
        pass

    def _words(self, span: str) -> list[str]:
        return [w for w in re.findall(r"[A-Za-z][A-Za-z'’-]*", span) if len(w) > 1]

    def _trimmed(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        """The span without trailing non-names (a sentence's next word, an eponym's noun); None where its first word
        is no name (a department after "seen by") or nothing is left."""
        words = list(re.finditer(r"[A-Za-z][A-Za-z'’.-]*", text[start:end]))
        if words and words[0].group().rstrip(".") in NOT_NAMES:
            return None
        while words and (words[-1].group().rstrip(".") in NOT_NAMES
                         or (len(words[-1].group()) > 2 and eponym_here(text, start + words[-1].end()))):
            words.pop()
        if not words or all(len(w.group().rstrip(".")) == 1 for w in words):
            return None
        return start + words[0].start(), start + words[-1].end()

    def _accepted(self, rule: int, text: str, start: int, end: int) -> bool:
        span = text[start:end]
        words = self._words(span)
        if rule == 3:  # SMITH, JOHN: a known given name after the comma (not AMBIEN, CARDIZEM or EOMI, PERRL)
            return len(words) >= 2 and words[1].title() in self.given and words[0].title() not in NOT_NAMES
        if rule == 4:  # Smith, John: a known given name after the comma
            return len(words) >= 2 and words[1] in self.given
        if rule == 5:  # a known given name, then a capitalized word (not a saint's: St. Joseph Hospital)
            first = span.split()[0]
            saint = re.search(r"\b(?:St|Saint|Ste)\.?\s*$", text[:start])
            return len(words) >= 2 and first in self.given and not saint and words[-1] not in NOT_NAMES
        return True

    def analyze(self, text, entities, nlp_artifacts=None):
        spans: list[tuple[int, int]] = []
        for rule, pattern in enumerate(self.CUED):
            for m in pattern.finditer(text):
                kept = self._trimmed(text, m.start("id"), m.end("id"))
                whole = kept == (m.start("id"), m.end("id")) or rule not in (3, 4)  # LAST, FIRST stands whole
                if kept is not None and whole and self._accepted(rule, text, *kept):
                    spans.append(kept)
        words = {w.rstrip(".") for s, e in spans for w in self._words(text[s:e])}
        found = (words | {part for w in words for part in re.split(r"-", w) if len(part) > 2}) - NOT_NAMES
        for word in found:  # the same person mentioned again by one of the words found
            for m in re.finditer(rf"(?<![\w'’-]){re.escape(word)}(?![\w-])(?!['’](?!s\b)\w)", text):  # Okafor's too
                if not eponym_here(text, m.end()):
                    spans.append((m.start(), m.end()))
        return _results("NAME", spans)


def _is_ip(m: re.Match) -> bool:
    return all(int(part) <= 255 for part in m.group("id").split("."))


def _is_age(m: re.Match) -> bool:
    return int(m.group("id")) >= 90


GENERIC = frozenset("General Community County Regional University Memorial Medical Children's Women's Veterans "
                    "State City Main Central Teaching Local".split())


def _is_hospital(m: re.Match) -> bool:
    """A place's name, not a department's clinic (Neuro-Oncology Clinic) nor generic words alone (General Hospital)."""
    words = [w.rstrip(".,") for w in re.split(rf"\s+(?={FACILITY}$)", m.group("id"))[0].split()]
    return not all(w in GENERIC or w in DEPARTMENTS or w in ("of", "and", "&", "the")
                   or re.search(r"ology$|ics$|iatry$", w, re.IGNORECASE) for w in words)


CREDENTIALS = ("MD", "PA", "MA", "DC")  # abbreviations of states that are credentials too (Sarah Lee, MD)


def _is_city(m: re.Match) -> bool:
    """Not a medical or common word; before MD, PA or MA, not a person's name: a ZIP follows, a cue precedes (lives
    in), or no word is a given name."""
    words = m.group("id").split()
    if any(w in NOT_NAMES or w in EPONYMS or w in DEPARTMENTS for w in words):
        return False
    state = m.group(0)[m.end("id") - m.start(0):].strip(" ,")
    cued = m.start("id") > m.start(0)
    if state in CREDENTIALS and not cued and not re.match(r"\s*\d{5}", m.string[m.end():]):
        after_cue = re.search(rf"(?i:\b{RELATION}|\b{TITLE})\s*$", m.string[:m.start("id")])
        return not after_cue and not any(w in given_names() for w in words)
    return True


def _labelled(cues: str, value: str = r"[A-Z]{0,4}[-#]?\d[\dA-Z-]{3,14}") -> str:
    """A number after its label: MRN: 4482913, Acct # 99-1234, Member ID W123456789 (a digit in it)."""
    return rf"\b(?:{cues})\.?\s*(?:No\.?|Number|Num|#|ID)?\s*[:#=-]?\s*(?:is\s+)?(?P<id>(?=[A-Z-]*\d){value})\b"


def clinical() -> list[EntityRecognizer]:
    """medsft's recognizers, one per category it adds to Presidio's."""
    number = r"(?P<id>\(?\b\d{3}\)?[-.\s]?\d{3}[-.\s]\d{4}(?:\s*(?:x|ext\.?)\s*\d{1,5})?)\b"
    return [
        Names(),
        Dates(),
        Patterns("AGE", [r"\b(?P<id>\d{2,3})(?=\s*(?:-|\s)?\s*(?:years?|yrs?|y/o|yo|y\.o\.|year-old)\b)",
                         r"\b(?:age|aged|Age:|AGE:)\s*(?P<id>\d{2,3})\b"], re.IGNORECASE, _is_age),
        Patterns("ADDRESS", [rf"\b(?P<id>\d{{1,6}}[A-Z]?\s+(?:[NSEW]\.?\s+)?(?:{CAP}\s+){{1,3}}{STREET}\.?{UNIT})(?![a-z])",
                             r"\b(?P<id>P\.?\s?O\.?\s+Box\s+\d{1,6})\b"]),
        Patterns("CITY", [rf"\b(?P<id>{CAP}(?:\s+{CAP}){{0,2}}),\s+(?:{STATES})\b",
                          rf"\b(?:lives in|living in|resident of|resides in|moved to|moved from|native of|born in|"
                          rf"from|in)\s+(?P<id>{CAP}(?:\s+{CAP}){{0,2}}),\s+(?:{STATES})\b"], 0, _is_city),
        Patterns("ZIP", [rf"\b(?:{STATES})\.?,?\s+(?P<id>\d{{5}}(?:-\d{{4}})?)\b",
                         r"\b(?i:zip(?:\s*code)?|postal code)\s*[:#]?\s*(?P<id>\d{5}(?:-\d{4})?)\b"]),
        Patterns("PHONE", [number, r"(?P<id>\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,4})\b", rf"\b(?i:tel|phone|ph|fax|cell|mobile|pager|beeper|call)\b\.?\s*[:#]?\s*(?P<id>\+?1?[-\s.]?\(?\d{{3}}\)?[-.\s]?\d{{3}}[-.\s]?\d{{4}})"]),
        Patterns("EMAIL", [r"(?P<id>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)"]),
        Patterns("SSN", [r"\b(?P<id>\d{3}-\d{2}-\d{4})\b", r"\b(?i:ssn|social security(?: number| no\.?| #)?)\s*[:#]?\s*(?P<id>\d{3}[-\s]?\d{2}[-\s]?\d{4})\b"]),
        Patterns("MRN", [_labelled(r"MRN|MR|Medical Record|Med Rec|Medical Rec|Record|Chart|Hospital|Unit|Patient|Pt|"
                                   r"Case", r"[A-Z]{0,3}-?\d{5,12}")], re.IGNORECASE),
        Patterns("ACCOUNT", [_labelled(r"Account|Acct|Billing|Bill|Invoice|Encounter|Visit|FIN|CSN|HAR|Claim")], re.IGNORECASE),
        Patterns("HEALTH_PLAN", [_labelled(r"Member|Subscriber|Policy|Insurance|Insurance ID|Health Plan|Plan|Group|"
                                           r"Medicaid|Medicare|Beneficiary|HICN|MBI", r"[A-Z0-9]{1,4}[-]?[A-Z0-9]{4,14}")],
                 re.IGNORECASE),
        Patterns("LICENSE", [_labelled(r"License|Licence|Lic|DEA|NPI|Certificate|Cert|Driver'?s License|DL|Permit|"
                                       r"Registration", r"[A-Z]{0,3}-?\d{4,12}")], re.IGNORECASE),
        Patterns("DEVICE", [_labelled(r"Serial|S/N|SN|Device|Device ID|Implant|Lot|UDI|IMEI|Pacemaker|"
                                      r"Defibrillator|Pump|Monitor", r"(?=(?:[A-Z-]*\d){3})[A-Z0-9]{2,6}-?[A-Z0-9]{3,14}")],
                 re.IGNORECASE),
        Patterns("URL", [r"(?P<id>\b(?:https?://|www\.)[^\s<>\"')\]]+[^\s<>\"')\].,;:!?])",
                         r"(?<![@\w.-])(?P<id>[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|edu|gov|us|info|health|io|care)"
                         r"(?:/[^\s<>\"')\]]*[^\s<>\"')\].,;:!?])?)\b(?!@)"]),
        Patterns("IP", [r"\b(?P<id>(?:\d{1,3}\.){3}\d{1,3})\b"], 0, _is_ip),
        Patterns("HOSPITAL", [rf"(?P<id>\b(?:(?:St|Saint|Mt|Mount)\.?\s+)?{CAP}(?:['’]s)?(?:\s+(?:{CAP}(?:['’]s)?|of|and|&|the)){{0,4}}"
                              rf"\s+{FACILITY})\b"], 0, _is_hospital),
    ]
