"""De-identification: the Safe Harbor categories found on a synthetic annotated corpus (tests/deid_corpus.py) at the
recall and precision docs/privacy.md states, medical eponyms left alone, surrogates consistent and dates shifted
with their intervals, offline; `medsft deid` in every format with its report and none of the originals; a recipe's
`deidentify` (check refuses, surrogate trains and leaves no identifier in the run folder); bad input in one line."""

import json
import socket

import pytest

import deid_corpus
from conftest import write_jsonl
from medsft.__main__ import main
from medsft.deid import analyzer, dates
from medsft.deid.deidentifier import Deidentifier

NINETY_NINE = ["DATE", "PHONE", "EMAIL", "SSN", "MRN", "ACCOUNT", "LICENSE", "URL", "IP", "ZIP", "AGE"]


@pytest.fixture(scope="module")
def scored():
    notes = deid_corpus.corpus(500, seed=7)
    predicted = [[(s.start, s.end, s.category) for s in analyzer.find(n.text)] for n in notes]
    return deid_corpus.score(notes, predicted)


@pytest.mark.parametrize("category", NINETY_NINE)
def test_numbers_dates_and_ages_are_found_at_ninety_nine_percent(scored, category):
    found = scored["categories"][category]
    assert found["entities"] >= 50 and found["recall"] >= 0.99, (category, found)


@pytest.mark.parametrize("category, least", [("NAME", 0.95), ("ADDRESS", 0.95), ("HOSPITAL", 0.90),
                                             ("HEALTH_PLAN", 0.99), ("DEVICE", 0.99), ("CITY", 0.95)])
def test_names_addresses_and_hospitals_are_found(scored, category, least):
    found = scored["categories"][category]
    assert found["entities"] >= 50 and found["recall"] >= least, (category, found)


def test_precision_and_eponyms(scored):
    """Token-level precision over every category, and the eponyms (Parkinson's disease, Glasgow Coma Scale) kept."""
    assert scored["notes"] == 500 and scored["token_precision"] >= 0.90, scored["token_precision"]
    assert scored["eponyms"] >= 500 and scored["eponyms_untouched"] >= 0.95


def test_it_runs_with_no_network(monkeypatch):
    """Presidio's e-mail recognizer asks the web for a list of domains; here nothing may: a connection raises."""
    def refused(*args, **kwargs):
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refused)
    text = "Email j.okafor@gmail.com or visit https://portal.mercyhealth.org on 03/14/2023."
    assert [s.category for s in analyzer.find(text)] == ["EMAIL", "URL", "DATE"]


def test_surrogates_are_consistent_shift_dates_alike_and_follow_the_seed():
    text = ("Mr. Okafor was admitted on 03/14/2023 and discharged on 03/24/2023. Okafor's wife Maria Okafor "
            "called 617-555-0142.")
    once, found = Deidentifier("surrogate", seed=3).row({"note": text}, "patient-1")
    again, _ = Deidentifier("surrogate", seed=3).row({"note": text}, "patient-1")
    other, _ = Deidentifier("surrogate", seed=4).row({"note": text}, "patient-1")
    assert once == again and other != once  # the same input and seed, the same output
    names = [r.replacement for r in found if r.category == "NAME"]
    assert names[0] == names[1] != "Okafor" and names[2].endswith(" " + names[0])  # Okafor -> one surrogate everywhere
    admitted, discharged = [r.replacement for r in found if r.category == "DATE"]
    import datetime as dt

    first, second = (dt.datetime.strptime(d, "%m/%d/%Y").date() for d in (admitted, discharged))
    assert (second - first).days == 10 and admitted != "03/14/2023"
    assert first.weekday() == dt.date(2023, 3, 14).weekday()  # a shift of whole weeks
    for original in ("Okafor", "03/14/2023", "03/24/2023", "617-555-0142"):
        assert original not in once["note"]


@pytest.mark.parametrize("written, shifted", [("14-Mar-2023", "28-Mar-2023"), ("March 14th, 2023", "March 28th, 2023"),
                                              ("2023-03-14", "2023-03-28"), ("3-14-23", "3-28-23"), ("Mar. 14", "Mar. 28")])
def test_a_date_keeps_its_written_form(written, shifted):
    assert [f.form for f in dates.find(f"seen on {written}.")] and dates.shift(written, 14) == shifted


def test_redact_writes_the_categories():
    out, found = Deidentifier("redact").row({"note": "Dr. Nguyen-Tran saw the 93-year-old on 3/14/2023, MRN 4482913."}, "r")
    assert out["note"] == "Dr. [NAME] saw the [AGE]-year-old on [DATE], MRN [MRN]."
    assert [r.category for r in found] == ["NAME", "AGE", "DATE", "MRN"]


def planted(notes) -> set[str]:
    """The identifiers a search must not find: every planted span that no surrogate could repeat by chance (a
    number, or more than one word)."""
    return {n.text[s:e] for n in notes for s, e, _ in n.spans
            if len(n.text[s:e]) >= 6 and (any(c.isdigit() for c in n.text[s:e]) or " " in n.text[s:e])}


@pytest.mark.parametrize("kind", [".jsonl", ".json", ".csv", ".parquet", "folder"])
def test_deid_writes_the_same_format_and_a_report_without_the_originals(tmp_path, kind, capsys):
    notes = deid_corpus.corpus(12, seed=1)
    rows = [{"id": str(i), "note": n.text, "ward": "4B"} for i, n in enumerate(notes)]
    source, out = tmp_path / f"notes{kind}", tmp_path / f"clean{kind}"
    if kind == "folder":
        source.mkdir()
        for r in rows:
            (source / f"{r['id']}.txt").write_text(r["note"])
        out = tmp_path / "clean"
    elif kind == ".jsonl":
        write_jsonl(source, rows)
    elif kind == ".json":
        source.write_text(json.dumps(rows))
    elif kind == ".csv":
        import csv

        with open(source, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "note", "ward"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), source)
    assert main(["deid", str(source), str(out), "--seed", "5"]) == 0
    assert "identifiers in 12 of 12 rows" in capsys.readouterr().out
    written = "\n".join(p.read_text() for p in sorted(out.iterdir())) if kind == "folder" else out.read_bytes().decode("latin-1")
    report = out.with_name(out.name + ".deid.json").read_text()
    for identifier in planted(notes):
        assert identifier not in written and identifier not in report, identifier
    found = json.loads(report)
    assert found["rows"] == 12 and sum(found["counts"].values()) == sum(len(r["spans"]) for r in found["per_row"])
    assert found["settings"] == {"mode": "surrogate", "seed": 5, "fields": None, "patient_column": None}
    assert found["detector"]["presidio-analyzer"]
    if kind in (".jsonl", ".json"):
        kept = json.loads(out.read_text()) if kind == ".json" else [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["ward"] for r in kept] == ["4B"] * 12 and [r["id"] for r in kept] == [r["id"] for r in rows]


def test_fields_and_patient_scope(tmp_path):
    """--fields limits the fields scanned; --patient_column gives a patient's rows one set of surrogates and one
    date shift."""
    rows = [{"patient": "p1", "note": "Mr. Okafor seen on 03/14/2023.", "other": "Call 617-555-0142."},
            {"patient": "p1", "note": "Mr. Okafor seen on 03/24/2023.", "other": "Call 617-555-0142."}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert main(["deid", str(source), str(tmp_path / "out.jsonl"), "--fields", "note", "--patient_column", "patient"]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["other"] for r in out] == ["Call 617-555-0142."] * 2  # not named: kept
    assert out[0]["note"].split()[1] == out[1]["note"].split()[1] != "Okafor."
    import datetime as dt

    first, second = (dt.datetime.strptime(r["note"].split()[-1].rstrip("."), "%m/%d/%Y").date() for r in out)
    assert (second - first).days == 10


@pytest.mark.parametrize("argv, message", [
    (["{empty}", "{out}"], "INPUT {empty} holds no rows"),
    (["{broken}", "{out}"], "INPUT {broken} line 1 is not valid JSON"),
    (["{good}", "{out}", "--fields", "notes"], "--fields notes: no row of {good} has it; its fields are id, note"),
    (["{good}", "{out}", "--mode", "mask"], "--mode mask is not a mode of deid; choose surrogate, redact"),
    (["{good}", "{tmp}/out.csv"], "OUTPUT {tmp}/out.csv must be in INPUT's format: a .jsonl file"),
    (["{tmp}/nowhere.jsonl", "{out}"], "INPUT {tmp}/nowhere.jsonl not found; give a data file (.jsonl, .json, .csv, "
                                       ".parquet) or a folder of .txt notes"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    paths = {"empty": tmp_path / "empty.jsonl", "broken": tmp_path / "broken.jsonl", "good": tmp_path / "good.jsonl",
             "out": tmp_path / "out.jsonl", "tmp": tmp_path}
    paths["empty"].write_text("")
    paths["broken"].write_text("{not json\n")
    write_jsonl(paths["good"], [{"id": "1", "note": "Mr. Okafor, MRN 4482913."}])
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["deid", *[a.format(**paths) for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medsft: error: " + message.format(**paths)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def note_rows(n, seed):
    notes = deid_corpus.corpus(n, seed=seed)
    return notes, [{"text": note.text} for note in notes]


@pytest.mark.slow
def test_deidentify_check_refuses_and_names_no_identifier(write_recipe, tmp_path, capsys):
    notes, rows = note_rows(30, 2)
    data = write_jsonl(tmp_path / "notes.jsonl", rows)
    recipe = write_recipe(task="report", dataset_name=str(data), deidentify="check")
    assert main([str(recipe)]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("medsft: error: deidentify: check found ") and "NAME" in err
    assert "rows (NAME " in err and "of dataset notes; nothing was trained or written" in err
    for identifier in planted(notes):
        assert identifier not in out and identifier not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_surrogate_run_trains_and_its_folder_holds_no_planted_identifier(write_recipe, tmp_path, capsys,
                                                                          monkeypatch):
    # A cache of its own: the suite's shared one holds other tests' real data (PubMedQA names hospitals too).
    monkeypatch.setenv("MEDSFT_DATA_CACHE", str(tmp_path / "cache"))
    notes, rows = note_rows(40, 3)
    data = write_jsonl(tmp_path / "notes.jsonl", rows)
    recipe = write_recipe(task="report", dataset_name=str(data), deidentify="surrogate", max_test_samples=4,
                          sample_count=1, sample_max_new_tokens=4)
    assert main([str(recipe)]) == 0
    shown = capsys.readouterr().out
    assert "de-identified: notes: " in shown and "replaced by surrogates" in shown
    run = tmp_path / "out"
    summary = json.loads((run / "deidentified.json").read_text())["notes"]
    assert summary["mode"] == "surrogate" and summary["identifiers"] > 100 and summary["categories"]["NAME"] > 10
    searched = [p for p in run.rglob("*") if p.is_file()]
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "rows" in p.parts]
    assert cached, "the run cached no rows: the search below would search nothing there"
    searched += cached
    contents = b"\n".join(p.read_bytes() for p in searched)
    for identifier in planted(notes):
        assert identifier.encode() not in contents and identifier not in shown, identifier
