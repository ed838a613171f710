"""De-identification: the identifiers of HIPAA's Safe Harbor rule that occur in clinical notes found (Presidio's
analyzer with clinical recognizers, fully offline), replaced by consistent surrogates or category labels (Presidio's
anonymizer), and counted without their text: categories, dates, names, recognizers, analyzer, surrogates,
deidentifier."""
