"""The process group of a ``torchrun`` launch, used only to split work and wait for each other.

``torchrun --nproc_per_node=N`` (one node) or ``torchrun --nnodes=M --node_rank=... --rdzv_endpoint=...``
(several) set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a
plain ``python`` launch sets none of them and runs as the only rank. Ranks exchange no
tensors, only barriers and small Python objects, so the gloo backend serves CPU and GPU runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

#: ranks wait for each other at the end: allow for very uneven shares of long videos
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or "RANK" in os.environ

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def start(self) -> None:
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not dist.is_initialized():
            return [obj]
        objs = [None] * self.world_size
        dist.all_gather_object(objs, obj)
        return objs

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
