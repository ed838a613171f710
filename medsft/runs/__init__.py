"""A run folder: writing it, its state, its provenance, its records, and reading it back. Nothing outside this stage
reads or writes a run folder's files by name."""
