"""Rows decoding together: their jobs, their seeded generators, one KV cache and the attention mask. Batches merge
(caches and masks left-padded to one width, masked) when requests join, and lose the leading columns no live row
attends to any more when rows leave: a step's work follows the live rows, never the batch's history."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    """Rows decoding together: their jobs and generators, one KV cache, the attention mask, each row's last position,
    the number of columns each row attends to, and the token each row feeds next."""

    jobs: list  # each row's engine.Job
    generators: list
    cache: object
    mask: torch.Tensor
    positions: torch.Tensor
    lengths: list[int]
    pending: list[int] = field(default_factory=list)


def new_cache(layers) -> object:
    from transformers import DynamicCache

    return DynamicCache(layers)


def _left_pad(t: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if not missing:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def merge(a: Batch, b: Batch) -> Batch:
    """Two batches as one: caches and masks left-padded to the same length (masked), rows stacked."""
    length = max(a.mask.shape[1], b.mask.shape[1])
    layers = [(torch.cat([_left_pad(x.keys, 2, length), _left_pad(y.keys, 2, length)]),
               torch.cat([_left_pad(x.values, 2, length), _left_pad(y.values, 2, length)]))
              for x, y in zip(a.cache.layers, b.cache.layers)]
    return Batch(a.jobs + b.jobs, a.generators + b.generators, new_cache(layers),
                  torch.cat([_left_pad(a.mask, 1, length), _left_pad(b.mask, 1, length)]),
                  torch.cat([a.positions, b.positions]), a.lengths + b.lengths, a.pending + b.pending)


def trim(batch: Batch) -> None:
    """Drop the leading columns no live row attends to (each row's columns are its last `length`)."""
    width = max(batch.lengths)
    if batch.mask.shape[1] > width:
        batch.mask = batch.mask[:, -width:]
        batch.cache = new_cache([(layer.keys[:, :, -width:], layer.values[:, :, -width:]) for layer in batch.cache.layers])
