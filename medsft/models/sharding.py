"""Whether a model's weights are split among the processes (DeepSpeed ZeRO-3, FSDP), so that its forward passes are
collective: a process that stops calling the model while another still calls it leaves that one waiting for ever.
Loops whose length depends on a process's own rows (decoding until each reply stops) ask here whether to keep every
process stepping while any still has work, as transformers' `synced_gpus` does."""

from __future__ import annotations

import torch


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sharded(model) -> bool:
    """The model's weights are gathered while it runs: ZeRO-3's partitioned parameters (`ds_id`), or FSDP's units."""
    if not _distributed():
        return False
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return (any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())
            or any(hasattr(p, "ds_id") for p in model.parameters()))


def largest(value: int, device: torch.device) -> int:
    """The largest of every process's `value`, on every process (one small all-reduce; the value itself under a
    single process). `device`: the model's, since NCCL refuses a tensor on the host."""
    if not _distributed():
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())
