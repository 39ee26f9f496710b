"""Training on several processes under ``torchrun``: the process group, DDP, sharded data and
the reductions the trainer needs.

torchrun starts one process per GPU and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each
(``MASTER_ADDR`` / ``MASTER_PORT`` for the rendezvous). When ``WORLD_SIZE`` > 1 the trainer
joins the process group (nccl on CUDA, gloo on the CPU), trains a DistributedDataParallel copy
of the model on its shard of the data and lets rank 0 alone write snapshots, stats and progress.
Without torchrun (or with one process) every function here is a no-op, so the single-process
path is the same code.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

logger = logging.getLogger(__name__)

_STARTED_HERE = False  # setup() started the process group, so close() ends it


@dataclass(frozen=True)
class Distributed:
    """This process's place in a multi-process run (one process: rank 0 of 1).

    Attributes:
        rank, world_size, local_rank: as torchrun sets them.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0


def resolve_device(device: str | torch.device | None) -> torch.device:
    """"auto" (or None) -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def setup(device: str | torch.device | None) -> tuple[Distributed, torch.device]:
    """Joins the process group when torchrun started several processes; returns where this
    process stands and the device it trains on.

    Under torchrun each process trains on ``cuda:LOCAL_RANK`` (device "auto" or "cuda") or on
    the CPU ("cpu", or "auto" without CUDA). Calling it again reuses the group; one that the
    caller initialised is used as it is and left to the caller to end.

    Raises:
        ConfigError: a device that cannot work with several processes (one line).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
    if world_size <= 1:
        return Distributed(), resolve_device(device)
    rank = dist.get_rank() if dist.is_initialized() else _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    target = _process_device(device, local_rank, world_size)
    ctx = Distributed(rank=rank, world_size=world_size, local_rank=local_rank)
    if target.type == "cuda":
        torch.cuda.set_device(target)  # nccl's collectives run on the current device
    if not dist.is_initialized():
        global _STARTED_HERE
        # gloo for CPU tensors and Python objects, nccl (started lazily, at its first use) for
        # CUDA tensors: the group works whichever device the run trains on.
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        if not _STARTED_HERE:
            # Also ends the group when training stops with an error before fit()'s finally.
            atexit.register(_destroy)
        _STARTED_HERE = True
        if ctx.is_main:
            logger.info("distributed training: %d processes, backend %s, rank 0 on %s",
                        world_size, dist.get_backend(), target)
    return ctx, target


def _process_device(device: str | torch.device | None, local_rank: int,
                    world_size: int) -> torch.device:
    from dlc_train.config import ConfigError

    requested = "auto" if device is None else str(device)
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return torch.device("cpu")
    if requested != "cuda":
        raise ConfigError(f"device {requested!r} under torchrun ({world_size} processes): each "
                          "process picks cuda:LOCAL_RANK itself; pass device 'cuda', 'auto' or "
                          "'cpu'")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' under torchrun but CUDA is not available: pass device "
                          "'cpu' (gloo backend) or run on GPUs")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"process LOCAL_RANK={local_rank} has no GPU: this machine has "
                          f"{torch.cuda.device_count()}; start at most that many processes per "
                          "node (torchrun --nproc_per_node)")
    return torch.device("cuda", local_rank)


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def close() -> None:
    """Ends the process group when :func:`setup` started it (at the end of training, or on an
    error); a caller's own group is left alone."""
    global _STARTED_HERE
    if _STARTED_HERE:
        _destroy()
        _STARTED_HERE = False


def is_main_process() -> bool:
    """Rank 0, or a single process: the one that writes shared files (torchrun's ``RANK``;
    no process group needed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


@contextlib.contextmanager
def main_process_first(device: str | torch.device | None):
    """Under torchrun, rank 0 runs the block before the other ranks do (it writes what they
    then read, e.g. a shuffle's train/test split, instead of every rank racing to write it).
    Joins the process group (see :func:`setup`); one process: just runs the block."""
    ctx, _ = setup(device)
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.enabled and ctx.is_main:
        dist.barrier()


def wrap_model(model: nn.Module, ctx: Distributed, device: torch.device) -> nn.Module:
    """The module to train: ``model`` itself, or its DDP wrapper under torchrun (which
    broadcasts rank 0's weights and buffers, so every rank starts from the same model)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=device.index if ids
                                   else None)


def sync_buffers(model: nn.Module, ctx: Distributed) -> None:
    """Copies rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts
    them before each forward pass, so after the last one each rank holds its own; synced at the
    end of an epoch, every rank evaluates and holds the model rank 0 saves."""
    if not ctx.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def shard_train_loader(loader: Iterable, ctx: Distributed, seed: int) -> Iterable:
    """The loader reading this rank's shard: a DistributedSampler (shuffled with ``seed`` and
    the epoch, see its ``set_epoch``) over the same dataset, batch size (per process) and
    collate function. Every rank gets the same number of batches (the sampler repeats a few
    images when the count does not divide), so no rank waits on another at the end."""
    if not ctx.enabled:
        return loader
    from dlc_train.config import ConfigError

    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise ConfigError("training under torchrun needs a torch DataLoader with a batch_size "
                          f"to shard, got {type(loader).__name__}")
    sampler = DistributedSampler(loader.dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=int(seed), drop_last=False)
    return _like(loader, sampler)


def shard_eval_loader(loader: Iterable | None, ctx: Distributed) -> Iterable | None:
    """The test loader reading every ``world_size``-th image from ``rank`` on: each image once
    across ranks (DistributedSampler would repeat some, and bias the metrics)."""
    if loader is None or not ctx.enabled or not isinstance(loader, DataLoader):
        return loader
    indices = list(range(ctx.rank, len(loader.dataset), ctx.world_size))
    return _like(loader, indices)


def _like(loader: DataLoader, sampler: Any) -> DataLoader:
    extra = {"prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator,
                      persistent_workers=loader.persistent_workers, **extra)


def sum_across(sums: dict[str, float], count: int, ctx: Distributed,
               device: torch.device) -> tuple[dict[str, float], int]:
    """Sums of per-batch values and the batch count over all ranks (so their ratio is the mean
    over every batch of the epoch); unchanged with one process. Every rank must pass the same
    keys (the same model gives the same losses)."""
    if not ctx.enabled:
        return sums, count
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64,
                          device=device)  # on CUDA: reduced by nccl, on the CPU by gloo
    dist.all_reduce(values)
    totals = values.tolist()
    return dict(zip(keys, totals[:-1])), int(round(totals[-1]))


def gather_lists(items: list, ctx: Distributed) -> list:
    """Every rank's ``items``, concatenated in rank order (the same list on every rank)."""
    if not ctx.enabled:
        return items
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]
