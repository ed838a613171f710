"""Models: where a model name points (hub, folder, the embedded model, a run a stage starts from), tokenizers and
their keys, a GPT-2 from scratch, and one loader for training and inference (dtype, attention, k-bit base, device,
the adapter on top)."""
