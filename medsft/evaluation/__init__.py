"""Evaluation: choice log-likelihoods and perplexity, metrics and the quality gate, bootstrap intervals and paired
tests, decision offsets fitted on dev rows, benchmark suites, and base vs tuned on every test split."""
