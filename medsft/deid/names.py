"""The words that tell a name from a medical word: given names (Faker's, of the locales whose names US notes carry),
capitalized words that start sentences or name departments and are no one's name, and the medical eponyms (a
disease, sign, score or instrument named after a person: Parkinson, Hodgkin, Glasgow, Babinski) that are never
identifiers. All shipped with the installed packages: nothing is fetched."""

from __future__ import annotations

import re
from functools import cache

# locales whose given names occur in US notes; Faker keeps them offline in its providers
LOCALES = ("en_US", "en_GB", "es_MX", "fr_FR", "de_DE", "it_IT", "pt_BR", "pl_PL", "nl_NL", "ru_RU", "hi_IN", "en_IN",
           "vi_VN", "zh_CN", "ko_KR", "ja_JP", "ar_AA", "tr_TR", "el_GR", "ga_IE", "tl_PH", "yo_NG", "sw")

# Surnames that are medical eponyms: a name only after a title or a patient's label, never before the medical word it
# names (Parkinson's disease, Babinski sign, Glasgow Coma Scale) and never alone.
EPONYMS = frozenset("""
Addison Adson Allen Alzheimer Apgar Apley Asperger Babinski Baker Barlow Barrett Bartter Battle Becker Bell Bennett
Berger Bouchard Boerhaave Bornholm Brudzinski Brugada Buerger Burkitt Caplan Charcot Chagas Cheyne Chiari Chvostek
Clark Colles Conn Coombs Crohn Cullen Cushing Creutzfeldt Jakob DeQuervain Down Dressler Duchenne Dupuytren Durkan
Ebstein Ehlers Danlos Epley Erb Ewing Fabry Fallot Felty Finkelstein Foley Gaucher Gilbert Glasgow Gleason Goodpasture
Gottron Graves Grey Turner Guillain Barre Barré Hashimoto Heberden Heimlich Henoch Schonlein Hirschsprung Hodgkin
Holter Homans Horner Huntington Hunter Hurler Jones Kaposi Kawasaki Kehr Kernig Kimmelstiel Klinefelter Korotkoff
Korsakoff Kussmaul Lachman Lasegue Legionnaires Lisfranc Lou Gehrig Lyme Mallory Weiss Marfan McBurney McMurray
Meckel Meniere Ménière Monteggia Murphy Niemann Pick Noonan Osgood Schlatter Osler Paget Parkinson Patrick Perthes
Peyronie Phalen Pott Prader Willi Raynaud Reiter Reye Rinne Romberg Rovsing Salter Harris Schatzki Sjogren Sjögren
Smith Spurling Stevens Johnson Still Swan Ganz Takayasu Tay Sachs Thompson Tinel Tourette Trendelenburg Trousseau
Turner Virchow Von Willebrand Waldenstrom Weber Wegener Wells Wernicke Whipple Wilms Wilson Wolff Parkinson White
Zenker Zollinger Ellison Glasgow Apgar Ranson Child Pugh Breslow Gleason Killip Mallampati Hunt Hess Fisher Bishop
Karnofsky Beck Hamilton Epworth Braden Norton Morse Richmond Ramsay Bristol Snellen Jaeger Ishihara Allis Kocher
Pfannenstiel Hartmann Roux Billroth Nissen Whipple Bankart Weil Tommy John Baker Holter Doppler Valsalva Kegel
Hickman Groshong Mayo Seldinger Yankauer Ambu Hoffmann Kirschner Steinmann Thomas Denis Browne
""".split())
# words after which a capitalized surname is the eponym of a medical thing, not a person
MEDICAL_AFTER = re.compile(
    r"^(?:'s|’s|s)?[ \t-]+(?:disease|syndrome|sign|test|score|scale|palsy|fracture|lymphoma|sarcoma|tumou?r|"
    r"criteria|classification|maneuver|manoeuvre|reflex|phenomenon|catheter|procedure|operation|law|triad|node|"
    r"ulcer|esophagus|oesophagus|anomaly|cyst|diverticulum|contracture|thyroiditis|encephalopathy|psychosis|"
    r"coma|stage|grade|class|position|line|tube|monitor|stockings|method|needle|ring|sphincter|point|body|bodies|"
    r"nodes|lines|stain|block|repair|incision|pouch|type|variant|fundoplication|space|angle|triangle|shunt|valve|"
    r"blade|forceps|retractor|clamp|examination|exam|study|studies|ultrasound|imaging|flow|dementia|splint|cast|"
    r"technique|approach|hernia|canal|duct|gland|cell|cells|maneuvers|reaction|effect|rule|sequence|malformation|"
    r"deformity|I|II|III|IV)\b",
    re.IGNORECASE)

# capitalized words that follow a title or a relation without being a name: roles, departments, pronouns
NOT_NAMES = frozenset("""
The This That These Those He She His Her Him They Them Their It Its We Our You Your I My Me Patient Pt Pts Pt's
Patient's Mother Father Son Daughter Wife Husband Brother Sister Family Today Yesterday Tomorrow Tonight Morning
Evening Night Cardiology Oncology Neurology Surgery Radiology Pathology Urology Nephrology Dermatology Psychiatry
Pediatrics Orthopedics Gastroenterology Pulmonology Endocrinology Rheumatology Hematology Obstetrics Gynecology
Ophthalmology Otolaryngology ENT ICU ER ED OR PACU NICU Emergency Department Dept Clinic Hospital Service Team Nurse
Nursing Physician Doctor Resident Attending Fellow Staff Medicine Internal General Family Primary Care Social Work
Physical Therapy Occupational Speech Hospice Home Health Pharmacy Lab Laboratory Triage Admission Discharge
History Exam Examination Plan Assessment Impression Diagnosis Diagnoses Findings Procedure Procedures Medications
Allergies Review Systems Vitals Labs Note Notes Report Summary Chief Complaint HPI PMH PSH ROS Mr Mrs Ms Dr Miss
Prof Jr Sr II III IV MD DO RN NP PA PhD MSN BSN LPN CNA PharmD DDS DMD Esq And Or But With Without For From To In On
At By Of As Is Was Are Were Be Been Has Have Had Will Would Should Could May Might Must Can Did Does Do Not No Yes
All Any Some None Both Each Every Other Another Such Same Also Then Than When Where Who Whom Whose What Which While
After Before During Since Until Per Via Re However Therefore Thus Although Again Also Additionally Furthermore
Pending Status Post Prior Follow Up Return Call Contact Seen See Noted
Left Right Bilateral Upper Lower Anterior Posterior Normal Abnormal Stable Unremarkable Negative Positive Denies
Reports Presents Presented Complains Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March
April May June July August September October November December Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec
Street Avenue Road Boulevard Lane Drive Court Suite Apt Unit Box Center Centre Medical Health Memorial Regional
St Ave Rd Blvd Ln Ct Way Place Pl Terrace Ter Circle Cir Highway Hwy Parkway Pkwy Square Sq Trail Trl Alley Row
University Community County State City Saint St Christian Baptist Methodist Presbyterian Lutheran Catholic Adventist
Jewish Muslim Hindu Buddhist English Spanish French Chinese American African Asian Hispanic Latino Caucasian Black
White Sinus Tylenol Aspirin Lasix Coumadin Heparin Insulin Metformin Lisinopril Albuterol Prednisone Doppler Holter
Foley Jackson Pratt Hemovac Steri Vicryl Prolene Monocryl Dermabond Betadine Hibiclens Gelfoam Surgicel Bovie
""".split())


# Given names US notes carry that Faker's providers keep only in other scripts (Chinese, Russian, Arabic, Korean,
# Japanese) or not at all (Igbo), as they are transliterated
TRANSLITERATED = frozenset("""
Wei Li Ming Jing Hui Yan Xiao Jun Lei Hong Mei Ling Yong Jian Hao Bo Chen Xin Fang Ying Qiang Tao Ping Hua Zhen Xiu
Dmitri Dmitry Sergei Sergey Ivan Olga Natalia Natalya Svetlana Yuri Vladimir Alexei Alexey Irina Tatiana Tatyana
Anastasia Mikhail Nikolai Andrei Pavel Oleg Galina Lyudmila Igor Boris Elena Yelena Ekaterina Yekaterina Vera Nadia
Mohammed Muhammad Mohamed Ahmed Ahmad Ali Omar Hassan Hussein Khalid Youssef Yusuf Fatima Aisha Ayesha Maryam Layla
Noor Zainab Ibrahim Mustafa Karim Samir Rania Huda Amina Hamza Bilal Tariq Walid Nadia Salma Yasmin Leila Farah
Chinedu Chioma Emeka Ngozi Obinna Adaeze Oluwaseun Tunde Funmilayo Kemi Uchenna Ifeoma Chukwuemeka Nnamdi Amaka
Kwame Kofi Ama Abena Yaw Akua Kwabena Efua Babajide Folake Temitope Ayodele Olumide Chiamaka Ikenna Nneka
Minh Anh Thanh Linh Huong Tuan Hoa Lan Trang Duc Quang Hieu Phuong Thu Hai Nam Long Hung Dung Khanh Thao Ngoc
Hiroshi Takeshi Yuki Haruto Sakura Kenji Akira Yumi Aiko Satoshi Hana Ren Sota Yuto Daiki Kaito Mei Aoi Riku Naoki
Jiwoo Minjun Seoyeon Jihoon Hyun Jae Sung Young Eun Hyejin Jisoo Dongwook Sunghoon Minji Yuna Joon Seung
""".split())


@cache
def given_names() -> frozenset[str]:
    """Given names from Faker's person providers of LOCALES, the Latin-script ones."""
    import importlib

    names: set[str] = set()
    for locale in LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except (ImportError, AttributeError):
            continue
        for attribute in ("first_names", "first_names_male", "first_names_female", "first_names_nonbinary"):
            found = getattr(provider, attribute, ())
            names.update(n for n in (found.keys() if isinstance(found, dict) else found)
                         if isinstance(n, str) and re.fullmatch(r"[A-Z][a-z]+(?:-[A-Z][a-z]+)?", n))
    return frozenset((names | TRANSLITERATED) - NOT_NAMES)


def eponym_here(text: str, end: int) -> bool:
    """Whether the word ending at `end` is followed by a medical noun it names (Parkinson's disease, Babinski sign)."""
    return bool(MEDICAL_AFTER.match(text[end:end + 40]))
