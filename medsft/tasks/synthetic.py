"""A seeded, deterministic generator of medical reports and PubMedQA-style questions answerable from them.

Each question's answer follows from one finding in the note (a temperature, a heart rate, an HbA1c, a chest
X-ray reading), so a model can really learn the task: the quickstart shows loss and accuracy moving with
nothing downloaded.
"""

from __future__ import annotations

import random
from typing import Any

_COMPLAINTS = ["cough", "shortness of breath", "fatigue", "chest discomfort", "headache", "abdominal pain"]
_HISTORY = ["hypertension", "type 2 diabetes", "asthma", "hyperlipidemia", "no significant past history"]
_PLANS = {
    "fever": "Antipyretics, fluids and blood cultures; review in 48 hours.",
    "tachycardia": "ECG, electrolytes and thyroid function; repeat heart rate after fluids.",
    "pneumonia": "Oral amoxicillin for five days; chest X-ray again in six weeks.",
    "diabetes": "Review metformin dose, dietary advice and repeat HbA1c in three months.",
}


def _finding(kind: str, label: str, rng: random.Random) -> tuple[str, str, str, str]:
    """(question, finding sentence, impression, long answer) consistent with `label`."""
    if kind == "fever":
        t = {"yes": rng.uniform(38.2, 40.1), "no": rng.uniform(36.2, 37.3), "maybe": rng.uniform(37.6, 38.0)}[label]
        return (
            "Does the patient have a fever?",
            f"Temperature {t:.1f} C, measured once, orally.",
            {"yes": "Febrile illness.", "no": "Afebrile.", "maybe": "Borderline temperature."}[label],
            {
                "yes": f"A temperature of {t:.1f} C is above 38.0 C, so the patient is febrile.",
                "no": f"A temperature of {t:.1f} C is within the normal range.",
                "maybe": f"A single reading of {t:.1f} C is borderline and needs repeating.",
            }[label],
        )
    if kind == "tachycardia":
        hr = {"yes": rng.randint(108, 140), "no": rng.randint(58, 88), "maybe": rng.randint(96, 102)}[label]
        return (
            "Is the patient tachycardic?",
            f"Heart rate {hr} beats per minute at rest.",
            {"yes": "Sinus tachycardia.", "no": "Normal heart rate.", "maybe": "Heart rate at the upper limit."}[label],
            {
                "yes": f"A resting heart rate of {hr} is above 100, which is tachycardia.",
                "no": f"A resting heart rate of {hr} is normal.",
                "maybe": f"A resting heart rate of {hr} is at the threshold; it should be rechecked.",
            }[label],
        )
    if kind == "pneumonia":
        finding = {
            "yes": "Chest X-ray shows consolidation in the right lower lobe with air bronchograms.",
            "no": "Chest X-ray shows clear lung fields and no consolidation.",
            "maybe": "Chest X-ray shows a faint opacity at the left base; early infiltrate cannot be excluded.",
        }[label]
        return (
            "Is there radiographic evidence of pneumonia?",
            finding,
            {"yes": "Right lower lobe pneumonia.", "no": "No pneumonia.", "maybe": "Possible early pneumonia."}[label],
            {
                "yes": "Lobar consolidation with air bronchograms is the radiographic sign of pneumonia.",
                "no": "Clear lung fields argue against pneumonia.",
                "maybe": "A faint basal opacity is equivocal; clinical correlation is needed.",
            }[label],
        )
    a1c = {"yes": rng.uniform(5.8, 6.8), "no": rng.uniform(8.4, 11.5), "maybe": rng.uniform(7.0, 7.6)}[label]
    return (
        "Is the patient's diabetes well controlled?",
        f"HbA1c {a1c:.1f}%.",
        {"yes": "Well-controlled diabetes.", "no": "Poorly controlled diabetes.", "maybe": "Borderline control."}[label],
        {
            "yes": f"An HbA1c of {a1c:.1f}% is below the 7% target.",
            "no": f"An HbA1c of {a1c:.1f}% is well above the 7% target.",
            "maybe": f"An HbA1c of {a1c:.1f}% is just above target; control is borderline.",
        }[label],
    )


def _case(i: int, rng: random.Random) -> dict[str, Any]:
    label = rng.choices(["yes", "no", "maybe"], weights=[55, 34, 11])[0]
    kind = rng.choice(list(_PLANS))
    question, finding, impression, long_answer = _finding(kind, label, rng)
    age, sex = rng.randint(19, 88), rng.choice(["male", "female"])
    complaint, history = rng.choice(_COMPLAINTS), rng.choice(_HISTORY)
    days = rng.randint(1, 14)
    sections = {
        "CHIEF COMPLAINT": f"{age}-year-old {sex} with {complaint} for {days} days.",
        "HISTORY OF PRESENT ILLNESS": f"The patient reports {complaint} that began {days} days ago. "
        f"Past history: {history}. No recent travel.",
        "FINDINGS": finding,
        "IMPRESSION": impression,
        "PLAN": _PLANS[kind],
    }
    return {"id": f"syn-{i:05d}", "label": label, "question": question, "sections": sections, "long": long_answer}


def _cases(n: int, seed: int):
    rng = random.Random(seed)
    return [_case(i, rng) for i in range(n)]


def pubmedqa_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` PubMedQA-style questions in the hub schema, each answerable from its note."""
    rows = []
    for case in _cases(n, seed):
        s = case["sections"]
        rows.append({
            "pubid": case["id"],
            "question": case["question"],
            # The impression is read with the findings, as in a note: from a threshold on a number alone the
            # 135M model learns the prior within the quickstart's 2 minutes (70% at best on other seeds' items).
            "context": {"contexts": [s["CHIEF COMPLAINT"], s["HISTORY OF PRESENT ILLNESS"], s["FINDINGS"], s["IMPRESSION"]],
                        "labels": ["COMPLAINT", "HISTORY", "FINDINGS", "IMPRESSION"]},
            "long_answer": case["long"],
            "final_decision": case["label"],
        })
    return rows


def report_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` notes as {id, text, specialty}, with section headers."""
    return [{"id": case["id"], "text": "\n".join(f"{header}: {body}" for header, body in case["sections"].items()),
             "specialty": "General Medicine"} for case in _cases(n, seed)]
