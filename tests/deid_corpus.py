"""A synthetic annotated corpus of clinical notes for de-identification, and its scoring (i2b2 2014 style).

Each note is written from varied sentences with every Safe Harbor category planted in several written forms (names
after titles, labels, relations, in LAST, FIRST form and bare; every common date form; ages over 89 beside ages that
are not identifiers; addresses, cities, ZIP codes, phone and fax numbers, e-mails, SSNs, record, account, plan,
licence and device numbers, URLs, IPs, hospital names), with clinical sentences full of capitalized medical words,
department clinics, doses, vitals and years (none an identifier) and medical eponyms (Parkinson's disease, Glasgow
Coma Scale), whose spans are kept apart. Gold spans are exact character offsets. Surnames are drawn from a list
that the detector does not hold; given names from common ones. A surname stands alone ("Okafor tolerated the
visit") only after the note has named the person: a bare capitalized word never introduced is the narrative case
medsft does not claim (docs/privacy.md).

    notes = corpus(500, seed=0)     # [Note(text, spans=[(start, end, category)], eponyms=[(start, end)])]
    scores = score(notes, predicted)  # predicted: one [(start, end, category)] per note
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

SURNAMES = ["Okafor", "Nguyen-Tran", "Kowalczyk", "Abernathy", "O'Brien", "McAllister", "Oyelaran", "Castellanos",
            "Haddad", "Lindqvist", "Petrossian", "Mbeki", "Yamamoto", "Delacroix", "Van Houten", "Fitzgerald",
            "Szymanski", "Achterberg", "Quintero", "Nakashima", "Balogun", "Whitfield", "Rasmussen", "Kapoor",
            "DeLuca", "Oduya", "Brennan", "Ferreira", "Gallagher", "Halvorsen", "Iglesias", "Jablonski", "Karimi",
            "Lozano", "Moreau", "Novak", "Ortega", "Pellegrino", "Rahman", "Sorensen", "Tanaka", "Urquhart",
            "Valdez", "Wojcik", "Zielinski", "Ashworth", "Bergstrom", "Chaudhry", "Dimitrov", "Eriksen"]
GIVEN = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
         "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "Maria",
         "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Betty", "Mark", "Sandra", "Steven", "Ashley", "Paul",
         "Emily", "Andrew", "Michelle", "Joshua", "Amanda", "Kevin", "Melissa", "Brian", "Deborah", "Juan", "Ana",
         "Wei", "Priya", "Fatima", "Ahmed", "Olga", "Dmitri", "Chinedu", "Aisha"]
STREETS = ["Elm", "Maple", "Oak", "Washington", "Lincoln", "Cedar", "Pine", "Lake", "Hill", "Park", "Sunset", "Ridge"]
SUFFIXES = ["Street", "St.", "Avenue", "Ave", "Road", "Rd.", "Boulevard", "Lane", "Drive", "Court", "Way", "Place"]
CITIES = [("Boston", "MA"), ("Springfield", "IL"), ("Columbus", "Ohio"), ("Portland", "OR"), ("Austin", "TX"),
          ("Fresno", "CA"), ("Albany", "New York"), ("Tacoma", "WA"), ("Savannah", "GA"), ("Eugene", "Oregon"),
          ("Worcester", "MA"), ("Dayton", "OH"), ("Tulsa", "OK"), ("Madison", "WI"), ("Reno", "NV")]
HOSPITALS = ["St. Mary's Hospital", "Lakeside Medical Center", "Mercy Clinic", "Brigham and Women's Hospital",
             "Riverside Regional Medical Center", "Good Samaritan Hospital", "Mount Sinai Hospital",
             "Valley Children's Hospital", "Northgate Health Center", "Sacred Heart Medical Center",
             "Cedar Ridge Rehabilitation Center", "Saint Luke's Hospital"]
EPONYM_PHRASES = ["Parkinson's disease", "Hodgkin lymphoma", "Glasgow Coma Scale", "Babinski sign", "Crohn's disease",
                  "Cushing syndrome", "Graves disease", "Bell's palsy", "Alzheimer's disease", "Barrett esophagus",
                  "Raynaud phenomenon", "Kaposi sarcoma", "Wilson disease", "Homans sign", "Murphy sign",
                  "Trendelenburg position", "Foley catheter", "Apgar score", "Gleason score", "Colles fracture",
                  "Guillain-Barre syndrome", "Hashimoto thyroiditis", "Marfan syndrome", "Romberg test",
                  "Lachman test", "Valsalva maneuver", "Down syndrome", "Tourette syndrome", "Huntington disease",
                  "Addison disease"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
CLINICAL = ["Assessment: community-acquired pneumonia, improving on Ceftriaxone.",
            "Plan: continue Lasix 40 mg daily and Metformin 500 mg twice daily.",
            "Vitals: BP 132/84, HR 88, RR 16, SpO2 97% on room air.",
            "She was seen in Cardiology Clinic and the Emergency Department.",
            "Past Medical History: Hypertension, Type 2 Diabetes Mellitus, COPD.",
            "Labs: WBC 11.2, Hgb 10.4, Platelets 250, Creatinine 1.3.",
            "CT Chest showed no Pulmonary Embolism. MRI Brain unremarkable.",
            "He had a cholecystectomy in 2015 and a CABG in 2019.",
            "Review of Systems: negative except as noted in the HPI.",
            "Follow up in 2 weeks with Primary Care and Physical Therapy.",
            "The patient is a 45-year-old woman with chest pain; her 62 year old brother has CAD.",
            "Impression: Acute Kidney Injury, likely prerenal. Continue IV fluids.",
            "Social History: lives with family, former smoker, 20 pack-years.",
            "Medications: Aspirin 81 mg, Atorvastatin 40 mg, Lisinopril 10 mg.",
            "Physical Exam: Lungs clear. Heart regular rate and rhythm. Abdomen soft."]


@dataclass
class Note:
    text: str = ""
    spans: list[tuple[int, int, str]] = field(default_factory=list)
    eponyms: list[tuple[int, int]] = field(default_factory=list)

    def add(self, text: str, category: str | None = None) -> None:
        if category is not None:
            self.spans.append((len(self.text), len(self.text) + len(text), category))
        self.text += text

    def eponym(self, phrase: str) -> None:
        word = re.match(r"[A-Za-z]+", phrase).group()
        self.eponyms.append((len(self.text), len(self.text) + len(word)))
        self.text += phrase


def _digits(rng, n: int) -> str:
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def _date(rng) -> list[tuple[str, str | None]]:
    """One date in one of the written forms, as (text, category) pieces (a cue stays outside the span)."""
    m, d, y = rng.randint(1, 12), rng.randint(1, 28), rng.randint(1990, 2024)
    month, suffix = MONTHS[m - 1], ("th" if 11 <= d <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th"))
    forms = [f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y}", f"{m}-{d}-{y % 100:02d}", f"{y}-{m:02d}-{d:02d}",
             f"{d}-{month[:3]}-{y}", f"{d} {month} {y}", f"{month} {d}{suffix}, {y}", f"{month} {d}, {y}",
             f"{month[:3]}. {d}, {y}", f"{month} {y}", f"{month} {d}", f"{d}{suffix} of {month}"]
    k = rng.randrange(len(forms) + 2)
    if k == len(forms):
        return [("on the ", None), (f"{d}{suffix}", "DATE")]
    if k == len(forms) + 1:
        return [("dated ", None), (f"{m}/{d}", "DATE")]
    return [("on ", None), (forms[k], "DATE")]


def _phone(rng) -> str:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), _digits(rng, 4)
    return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}"])


def _name_sentence(note: Note, rng, last: str, first: str) -> None:
    m = rng.choice("ABCDEFGHJKLMNPRSTW")
    other_first, other_last = rng.choice(GIVEN), rng.choice(SURNAMES)
    form = rng.randrange(9)
    if form == 0:
        note.add(rng.choice(["Mr. ", "Mrs. ", "Ms. "])); note.add(last, "NAME"); note.add(" presents for follow-up. ")
    elif form == 1:
        note.add("PATIENT: "); note.add(f"{last.upper()}, {first.upper()} {m}", "NAME"); note.add("\n")
    elif form == 2:
        note.add("Pt: "); note.add(f"{first[0]}. {last}", "NAME"); note.add(". ")
    elif form == 3:
        note.add("He was seen by Dr. "); note.add(other_last, "NAME"); note.add(" in clinic. ")
    elif form == 4:
        note.add(f"His {rng.choice(['son', 'daughter', 'brother', 'sister'])}, "); note.add(other_first, "NAME")
        note.add(", was present. ")
    elif form == 5:
        note.add(f"{rng.choice(['Wife', 'Husband', 'Spouse'])} "); note.add(f"{other_first} {last}", "NAME")
        note.add(" provides history. ")
    elif form == 6:
        note.add("Referred by "); note.add(f"{other_first} {other_last}", "NAME"); note.add(", MD. ")
    elif form == 7:
        note.add(f"Dr. "); note.add(f"{other_last}-{rng.choice(SURNAMES).split('-')[0]}", "NAME")
        note.add(" reviewed the films. ")
    else:
        note.add(f"{first} {last}", "NAME"); note.add(" was admitted overnight. ")


def _identifiers(note: Note, rng, last: str, first: str) -> None:
    """One sentence planting identifiers of a few categories."""
    k = rng.randrange(14)
    if k == 0:
        for text, cat in _date(rng):
            note.add(text if cat else "Admitted " + text, cat)
        note.add(". ")
    elif k == 1:
        note.add(f"A "); note.add(str(rng.randint(90, 104)), "AGE")
        note.add(rng.choice(["-year-old", " year old", " y/o", " yo"]) + " patient. ")
    elif k == 2:
        street = f"{rng.randint(2, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"
        if rng.random() < 0.3:
            street += f", Apt {rng.randint(1, 40)}{rng.choice('ABC')}"
        city, state = rng.choice(CITIES)
        note.add("Address: "); note.add(street, "ADDRESS"); note.add(", "); note.add(city, "CITY")
        note.add(f", {state} "); note.add(_digits(rng, 5), "ZIP"); note.add(". ")
    elif k == 3:
        note.add(rng.choice(["Phone: ", "Call ", "Cell ", "Tel. "])); note.add(_phone(rng), "PHONE")
        note.add("; fax "); note.add(_phone(rng), "PHONE"); note.add(". ")
    elif k == 4:
        user = f"{first.lower()}.{last.lower().replace(chr(39), '').replace(' ', '')}"
        note.add("Email: "); note.add(f"{user}{rng.randint(1, 99)}@{rng.choice(['gmail.com', 'yahoo.com', 'outlook.com', 'mercyhealth.org'])}", "EMAIL")
        note.add(". ")
    elif k == 5:
        note.add(rng.choice(["SSN: ", "Social security number "]))
        note.add(f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}", "SSN"); note.add(". ")
    elif k == 6:
        note.add(rng.choice(["MRN: ", "MRN ", "MR# ", "Medical record number "])); note.add(_digits(rng, rng.randint(6, 9)), "MRN")
        note.add(". ")
    elif k == 7:
        note.add(rng.choice(["Acct #: ", "Account number ", "Encounter # "]))
        note.add(f"{_digits(rng, 2)}-{_digits(rng, 6)}" if rng.random() < 0.5 else _digits(rng, 9), "ACCOUNT"); note.add(". ")
    elif k == 8:
        note.add(rng.choice(["Member ID: ", "Policy # ", "Medicaid ID "]))
        note.add(f"{rng.choice('WXYZ')}{_digits(rng, 9)}", "HEALTH_PLAN"); note.add(". ")
    elif k == 9:
        note.add(rng.choice(["Lic. No. ", "DEA # ", "Driver's license "]))
        note.add(f"{rng.choice(['MA-', 'AB', ''])}{_digits(rng, 7)}", "LICENSE"); note.add(". ")
    elif k == 10:
        note.add(rng.choice(["Pacemaker serial: ", "Device S/N ", "Pump serial number "]))
        note.add(f"{rng.choice(['PM', 'XR', 'MD'])}-{_digits(rng, 5)}{rng.choice('XYZ')}", "DEVICE"); note.add(". ")
    elif k == 11:
        note.add("Portal: "); note.add(rng.choice([f"https://portal.{rng.choice(['mercyhealth', 'lakeside-med'])}.org/p/{_digits(rng, 5)}",
                                                   f"www.{rng.choice(['carelink', 'myhealth'])}.com"]), "URL")
        note.add(" (login from "); note.add(f"{rng.randint(10, 192)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}", "IP")
        note.add("). ")
    elif k == 12:
        note.add(rng.choice(["Transferred from ", "Admitted to ", "Seen at "])); note.add(rng.choice(HOSPITALS), "HOSPITAL")
        note.add(". ")
    else:
        city, state = rng.choice(CITIES)
        note.add("Lives in "); note.add(city, "CITY"); note.add(f", {state}. ")


def note(rng: random.Random) -> Note:
    out = Note()
    last, first = rng.choice(SURNAMES), rng.choice(GIVEN)
    for _ in range(rng.randint(8, 14)):
        r = rng.random()
        if r < 0.35:
            _name_sentence(out, rng, last, first)
        elif r < 0.75:
            _identifiers(out, rng, last, first)
        elif r < 0.85:
            out.add("History of "); out.eponym(rng.choice(EPONYM_PHRASES)); out.add("; "); out.eponym(rng.choice(EPONYM_PHRASES))
            out.add(" noted. ")
        else:
            out.add(rng.choice(CLINICAL) + " ")
        if rng.random() < 0.15 and last in out.text:  # the surname again, alone, once the note has named them
            out.add(last, "NAME"); out.add(" tolerated the visit well. ")
    return out


def corpus(n: int, seed: int = 0) -> list[Note]:
    rng = random.Random(seed)
    return [note(rng) for _ in range(n)]


def _tokens(text: str, start: int, end: int) -> set[int]:
    """The start offsets of the word tokens (letters or digits) inside [start, end)."""
    return {start + m.start() for m in re.finditer(r"[A-Za-z0-9]+", text[start:end])}


def score(notes: list[Note], predicted: list[list[tuple[int, int, str]]]) -> dict:
    """Per category: entity-level recall (a gold span found by a predicted span of its category that overlaps it:
    i2b2 2014's relaxed match; and exactly: strict) and precision, token-level recall and precision; overall
    token-level recall and precision (any category: a token is an identifier or not); eponyms left untouched."""
    cats: dict[str, dict[str, int]] = {}
    tp_tokens = gold_tokens = pred_tokens = 0
    eponyms = kept = 0

    def c(name):
        return cats.setdefault(name, {"gold": 0, "found": 0, "exact": 0, "pred": 0, "correct": 0, "gold_tokens": 0,
                                      "pred_tokens": 0, "tp_tokens": 0})

    for note_, spans in zip(notes, predicted):
        text = note_.text
        for s, e, cat in note_.spans:
            c(cat)["gold"] += 1
            c(cat)["found"] += any(ps < e and s < pe and pc == cat for ps, pe, pc in spans)
            c(cat)["exact"] += any(ps == s and pe == e and pc == cat for ps, pe, pc in spans)
        for s, e, cat in spans:
            c(cat)["pred"] += 1
            c(cat)["correct"] += any(gs < e and s < ge and gc == cat for gs, ge, gc in note_.spans)
        gold_by = {}
        for s, e, cat in note_.spans:
            for t in _tokens(text, s, e):
                gold_by[t] = cat
        pred_by = {}
        for s, e, cat in spans:
            for t in _tokens(text, s, e):
                pred_by[t] = cat
        for t, cat in gold_by.items():
            c(cat)["gold_tokens"] += 1
            c(cat)["tp_tokens"] += pred_by.get(t) == cat
        for t, cat in pred_by.items():
            c(cat)["pred_tokens"] += 1
            c(cat)["tp_pred_tokens"] = c(cat).get("tp_pred_tokens", 0) + (gold_by.get(t) == cat)
        tp_tokens += len(set(gold_by) & set(pred_by))
        gold_tokens += len(gold_by)
        pred_tokens += len(pred_by)
        for s, e in note_.eponyms:
            eponyms += 1
            kept += not any(ps < e and s < pe for ps, pe, _ in spans)

    def ratio(a, b):
        return a / b if b else float("nan")

    out = {cat: {"entities": v["gold"], "recall": ratio(v["found"], v["gold"]), "strict_recall": ratio(v["exact"], v["gold"]),
                 "precision": ratio(v["correct"], v["pred"]), "token_recall": ratio(v["tp_tokens"], v["gold_tokens"]),
                 "token_precision": ratio(v.get("tp_pred_tokens", 0), v["pred_tokens"])}
           for cat, v in sorted(cats.items())}
    return {"categories": out, "token_recall": ratio(tp_tokens, gold_tokens), "token_precision": ratio(tp_tokens, pred_tokens),
            "eponyms_untouched": ratio(kept, eponyms), "eponyms": eponyms, "notes": len(notes)}
