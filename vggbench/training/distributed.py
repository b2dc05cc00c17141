"""Distributed data parallel under torchrun: who we are, the process group, sharding and reductions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ConfigError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set by torchrun for every process it starts


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and shows progress; the others only compute."""
        return self.rank == 0


def from_env(environ: Mapping[str, str] = os.environ) -> Dist:
    """The process's place in a torchrun job (a single process when torchrun did not start it)."""
    if "WORLD_SIZE" not in environ:
        return Dist()
    try:
        rank, world, local = (int(environ.get(k, "0")) for k in ENV_VARS)
    except ValueError:
        raise ConfigError(f"{', '.join(ENV_VARS)} must be integers, as torchrun sets them; got "
                          f"{', '.join(f'{k}={environ.get(k)!r}' for k in ENV_VARS)}") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    return Dist(rank, world, local)


@contextlib.contextmanager
def process_group(dist: Dist, device: torch.device) -> Iterator[None]:
    """Join the job's process group (gloo on CPU, nccl on CUDA) for the duration, then leave it."""
    import torch.distributed as td

    if not dist.enabled or td.is_initialized():
        yield
        return
    if device.type == "cuda":
        td.init_process_group("nccl", rank=dist.rank, world_size=dist.world_size, device_id=device)
    else:
        td.init_process_group("gloo", rank=dist.rank, world_size=dist.world_size)
    try:
        yield
    finally:
        td.destroy_process_group()


def _active() -> bool:
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place (a no-op in a single process)."""
    if _active():
        import torch.distributed as td

        td.all_reduce(tensor, op=td.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running stats), which are the ones rank 0 saves."""
    if _active():
        import torch.distributed as td

        for buffer in module.buffers():
            td.broadcast(buffer, src=0)


def broadcast_object(value):
    """Rank 0's `value` on every rank."""
    if not _active():
        return value
    import torch.distributed as td

    box = [value]
    td.broadcast_object_list(box, src=0)
    return box[0]


def shard(count: int, dist: Dist) -> list[int]:
    """This rank's share of `count` items for evaluation: every item once over all ranks, no padding."""
    return list(range(dist.rank, count, dist.world_size))
