"""Data: rows from hub ids, files and folders (their own splits kept), assigned to train / dev / test, formatted by
their task and tokenized exactly as training and evaluation see them."""
