"""The process group of a ``torchrun`` launch: extraction splits videos over it, training runs DDP.

``torchrun --nproc_per_node=N`` (one node) or ``torchrun --nnodes=M --node_rank=... --rdzv_endpoint=...``
(several) set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a
plain ``python`` launch sets none of them and runs as the only rank. Extraction's ranks exchange
no tensors, only barriers and small Python objects (gloo serves CPU and GPU runs); training's
all-reduce its gradients (NCCL on GPUs, gloo on CPU).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

#: ranks wait for each other at the end: allow for very uneven shares of long videos
BARRIER_TIMEOUT = timedelta(days=7)


@dataclass
class Ranks:
    """This process's place in the launch: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or "RANK" in os.environ

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes shared outputs and logs."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Ranks":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def start(self, backend: str = "gloo", timeout: timedelta | None = BARRIER_TIMEOUT) -> None:
        """Join the process group (when launched by torchrun). ``backend="auto"``: NCCL with CUDA, else
        gloo; ``timeout=None``: torch's default for collectives (training's, where a lost rank must fail fast)."""
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if self.distributed and not dist.is_initialized():
            dist.init_process_group(backend, **({"timeout": timeout} if timeout is not None else {}))

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
