"""Items shared out among processes, for every scorer (likelihoods, generated answers): sorted by length into the
same batches on every process, every num_processes-th batch run here, the results gathered. Each batch is padded
and computed exactly as one process would, so the numbers are one process's, to the bit. Every process runs as many
batches as the others (a repeat of the first pads a short share): under ZeRO-3 each forward pass is collective."""

from __future__ import annotations

from typing import Any, Callable, Iterable

# track(batches, total) -> batches: how a caller shows progress (rich's track, a test's counter); identity by default.
Track = Callable[[Iterable, int], Iterable]


# Items (sequences scored, replies generated) this process ran itself since the count was reset: the run records it
# (scored_per_process) and the 2-process tests read it back.
SCORED = {"items": 0}


def no_track(batches: Iterable, total: int) -> Iterable:
    return batches


def by_length(lengths: list[int], size: int) -> list[list[int]]:
    """Item indices in batches of `size`, shortest first (the same on every process)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


def shares(count: int) -> list[list[int]]:
    """Every process's share of `count` batches, as indices in the order it runs them: every num_processes-th,
    padded with -1 (a repeat of batch 0). Every process knows every share: what the others run at each step too."""
    from accelerate import PartialState

    n = PartialState().num_processes
    steps = -(-count // n)
    return [[j if j < count else -1 for j in range(rank, steps * n, n)] for rank in range(n)]


def run_shared(batches: list[list[int]], run: Callable[[int, list[int]], list], track: Track = no_track) -> dict[int, Any]:
    """{item: result} of every batch, whichever process ran it: run(step, batch) gives a batch's results in its
    order, on this process's share (a padding repeat is run and its results dropped), then they are gathered."""
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    mine = shares(len(batches))[state.process_index] if batches else []
    out: dict[int, Any] = {}
    for step, j in enumerate(track(mine, len(mine))):
        results = run(step, batches[max(j, 0)])
        if j >= 0:  # a repeat only keeps every process's forward passes in step
            out.update(zip(batches[j], results))
            SCORED["items"] += len(batches[j])
    if state.num_processes > 1:
        out = {i: v for part in gather_object([out]) for i, v in part.items()}
    return out
