"""Multi-process training with torch.distributed, for ``ccdseg train --distributed`` under torchrun.

torchrun starts N copies of the command and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; :func:`process_group` joins them (gloo on CPU, nccl on CUDA, one GPU per process)
and yields a :class:`DataParallel` strategy. ``train()`` calls the strategy at the few points
where a distributed run differs; :class:`SingleProcess` is the strategy that changes nothing.

Why no DistributedSampler: training tiles are drawn at random positions, with replacement,
from an endless stream (clusters oversampled), not from a finite set of indices for a sampler
to deal out. What a DistributedSampler would give, different samples on each rank, comes here
from seeding each rank's tile stream with (seed, rank); a single-process run keeps its exact
stream. The finite validation tiles are dealt out across ranks and their sums all-reduced, so
every rank gets the same scores and makes the same learning-rate and stopping decisions.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .devices import resolve_device
from .errors import InputError

T = TypeVar("T")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class SingleProcess:
    """The strategy of an ordinary run: every hook leaves things as they are."""

    rank = 0
    world_size = 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes the model and the history: N writers would race on one file."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def seed(self, seed: int) -> int:
        return seed

    def shard(self, items: list[T]) -> list[T]:
        return items

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def mean(self, value: float) -> float:
        return value

    def agree_stop(self, reason: str | None) -> str | None:
        return reason


class DataParallel(SingleProcess):
    """One rank of a DistributedDataParallel run, inside an initialised process group."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank, self.world_size, self.device = rank, world_size, device

    def place(self, device: torch.device) -> torch.device:
        """This rank's device (its own GPU, chosen when joining the group), whatever was asked."""
        return self.device

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP averages gradients across ranks in backward; it starts from rank 0's weights."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def seed(self, seed: int) -> int:
        """An independent tile stream per rank, reproducible from the run's seed."""
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def shard(self, items: list[T]) -> list[T]:
        """Every ``world_size``-th item from this rank's index: the ranks' shares partition the list."""
        return items[self.rank :: self.world_size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, identical on every rank (nccl needs the tensor on the GPU)."""
        reduced = tensor.to(self.device)
        dist.all_reduce(reduced)
        return reduced.to(tensor.device)

    def mean(self, value: float) -> float:
        return float(self.sum(torch.tensor([value], dtype=torch.float64))) / self.world_size

    def agree_stop(self, reason: str | None) -> str | None:
        """Stop all ranks if any wants to: a rank leaving the loop alone would hang the others."""
        votes = self.sum(torch.tensor([reason is not None], dtype=torch.int64))
        return reason or ("another rank stopped" if int(votes) else None)


def _torchrun_env() -> tuple[int, int, int]:
    """RANK, WORLD_SIZE and LOCAL_RANK, or a one-line error saying how to start the run."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise InputError(
            "--distributed runs under torchrun, e.g. `torchrun --nproc-per-node 2 -m napari_ccdseg.cli "
            f"train DATA --out MODEL --distributed` ({', '.join(missing)} not set)"
        )
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])


@contextmanager
def process_group(device_spec: str) -> Iterator[DataParallel]:
    """Join torchrun's process group for the run, and leave it at the end, also on errors."""
    rank, world_size, local_rank = _torchrun_env()
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} found; "
                "start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield DataParallel(rank, world_size, device)
        dist.barrier()  # leave together: a gloo rank whose peer tore down first can abort at exit
    finally:
        dist.destroy_process_group()
