"""Evaluation: choice log-likelihoods and perplexity, metrics and the quality gate, bootstrap intervals and paired
tests, decision offsets fitted on dev rows, benchmark suites, base (start) vs tuned on every test split, held-out
preference pairs, the test items checked for contamination, each number's protocol, and runs compared."""
