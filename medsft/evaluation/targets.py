"""The log-probabilities of target tokens in many sequences: the one engine every scorer runs on (choices,
perplexity, preference pairs), batched by length, the LM head run only on the positions scored (logprobs.py), shared
out among processes with the same numbers as one (sharing.py)."""

from __future__ import annotations

import torch

from medsft.evaluation import logprobs
from medsft.evaluation.sharing import Track, by_length, no_track, run_shared, shares


@torch.no_grad()
def scored_targets(model, sequences: list[list[int]], targets: list[list[tuple[int, int]]], pad_id: int, batch_size: int,
            track: Track = no_track) -> list[list[float]]:
    """For every sequence, in order: log p(token | sequence[: position + 1]) for each (position, token) of its
    targets, in their order (several tokens may be scored at one position: the choices after one prompt).

    Sequences are batched by length and right-padded, so positions need no shifting; the model runs to its hidden
    states at the targets' positions only and each is reduced on its device to the numbers asked for
    (logprobs.py: nothing vocabulary-sized per position). Shared out among processes by whole batches (sharing.py),
    the numbers are one process's to the bit, in bf16 too. At each step every process calls the LM head as often
    as the process scoring the most positions then needs (logprobs.head_calls): each call is collective under
    ZeRO-3, and every process knows every process's batches."""
    device = model.get_input_embeddings().weight.device  # the first of several under a device_map
    batches = by_length([len(s) for s in sequences], batch_size)
    positions = [sum(len({p for p, _ in targets[i]}) for i in batch) for batch in batches]  # rows the head projects
    calls = [max(logprobs.head_calls(positions[max(j, 0)]) for j in step) for step in zip(*shares(len(batches)))]

    def run(step: int, chunk: list[int]) -> list[list[float]]:
        width = max(len(sequences[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        keep = torch.zeros_like(ids, dtype=torch.bool)
        for row, i in enumerate(chunk):
            ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
            attention[row, : len(sequences[i])] = 1
            keep[row, [p for p, _ in targets[i]]] = True
        kept = keep.flatten().cumsum(0) - 1  # kept positions come out in (row, position) order
        rows = [int(kept[row * width + p]) for row, i in enumerate(chunk) for p, _ in targets[i]]
        tokens = [t for i in chunk for _, t in targets[i]]
        values = logprobs.target_log_probs(model, ids.to(device), attention.to(device), keep.to(device),
                                           torch.tensor(rows, dtype=torch.long), torch.tensor(tokens, dtype=torch.long),
                                           calls[step]).tolist()
        ends = [0]
        for i in chunk:
            ends.append(ends[-1] + len(targets[i]))
        return [values[a:b] for a, b in zip(ends, ends[1:])]

    out = run_shared(batches, run, track)
    return [out[i] for i in range(len(sequences))]


def token_logliks(model, sequences: list[list[int]], targets: list[list[int]], pad_id: int, batch_size: int,
                   track: Track = no_track) -> list[float]:
    """Summed log-probability of the tokens at `targets[i]` (indices into sequences[i]) given what precedes them."""
    pairs = [[(t - 1, sequence[t]) for t in ts] for sequence, ts in zip(sequences, targets)]
    return [sum(values) for values in scored_targets(model, sequences, pairs, pad_id, batch_size, track)]
