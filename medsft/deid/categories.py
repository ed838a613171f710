"""The identifier categories medsft finds: the Safe Harbor kinds (45 CFR 164.514(b)(2)) that occur in clinical notes,
each with the label `redact` writes. Presidio's own entity names are mapped onto them."""

from __future__ import annotations

CATEGORIES = {
    "NAME": "names of patients, relatives, clinicians",
    "DATE": "dates other than the year (and their day or month alone)",
    "AGE": "ages over 89",
    "ADDRESS": "street addresses and P.O. boxes",
    "CITY": "cities",
    "ZIP": "ZIP codes",
    "PHONE": "telephone and fax numbers",
    "EMAIL": "e-mail addresses",
    "SSN": "social security numbers",
    "MRN": "medical record numbers",
    "ACCOUNT": "account and encounter numbers",
    "HEALTH_PLAN": "health plan beneficiary numbers",
    "LICENSE": "certificate and licence numbers",
    "DEVICE": "device identifiers and serial numbers",
    "URL": "web addresses",
    "IP": "IP addresses",
    "HOSPITAL": "hospital and clinic names",
}
# Presidio's predefined recognizers medsft runs, and the category each finds
PRESIDIO = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "URL": "URL", "IP_ADDRESS": "IP", "US_SSN": "SSN",
            "DATE_TIME": "DATE", "PERSON": "NAME", "LOCATION": "CITY", "US_DRIVER_LICENSE": "LICENSE",
            "US_PASSPORT": "LICENSE", "MEDICAL_LICENSE": "LICENSE", "US_BANK_NUMBER": "ACCOUNT", "NRP": "NAME"}


def label(category: str) -> str:
    """What `redact` writes in an identifier's place."""
    return f"[{category}]"
