"""Multi-process training through torch.distributed, as torchrun starts it.

`torchrun --nproc-per-node N -m phenaki_cli train …` sets RANK / WORLD_SIZE / LOCAL_RANK and
the rendezvous; `Distributed.from_env()` joins that process group (NCCL on GPUs, gloo on
CPU) and the loop wraps the training objective in DDP or FSDP. Nothing here is home-made
communication: gradients are averaged by DDP / FSDP themselves.

How a step's global batch is split: it is `accumulate × world` micro-batches ("parts");
process r runs parts r, r + world, r + 2·world, … So one process with `--accumulate 2`
and two processes with `--accumulate 1` see the same clips, masks and (averaged)
gradients, which is what the equivalence test checks.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from phenaki_cli.errors import UserError

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def parts(self, accumulate: int) -> list[int]:
        """This process's parts of a step's global batch, in micro-batch order."""
        return [micro * self.world + self.rank for micro in range(accumulate)]

    @classmethod
    def from_env(cls, device: str | None = None) -> "Distributed":
        """Join torchrun's process group when WORLD_SIZE > 1; otherwise a single process.

        `device`: "cpu", "cuda" or None (CUDA when available)."""
        use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
        if use_cuda and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available here")
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if world <= 1:
            return cls(device=target)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, target)

    # ----- collectives (no-ops in a single process) ----------------------------------------------
    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, values: dict, keys: tuple[str, ...]) -> dict:
        """Average the metrics `keys` over processes for the log (a process may lack some: it
        had nothing to learn from). Every process must pass the same keys."""
        if not self.active:
            return values
        sums = torch.tensor([[float(values[k]), 1.0] if k in values else [0.0, 0.0] for k in keys],
                            dtype=torch.float64, device=self.device)
        dist.all_reduce(sums)
        return {**values, **{k: total / count for k, (total, count) in zip(keys, sums.tolist()) if count}}

    def agree(self, flag: bool) -> bool:
        """True when any process says True (e.g. 'this step had something to learn from')."""
        if not self.active:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor)
        return bool(tensor.item())

    def close(self, finished: bool = False) -> None:
        """Leave the process group. `finished`: every process got here the same way (not after an error
        on one of them), so they first wait for each other: none shuts its connections down while
        another still has a collective in flight."""
        if self.active and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()
            # FSDP's reference cycles hold the group: free it now, while the interpreter is whole,
            # not in its teardown (where freeing gloo's work can abort the process)
            gc.collect()


def wrap(objective: nn.Module, where: Distributed, strategy: str) -> nn.Module:
    """DDP (every process holds the whole model) or FSDP (parameters sharded over processes)."""
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if not where.active:
        return objective
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard
        return fully_shard(objective)
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(objective, device_ids=[where.local_rank] if where.device.type == "cuda" else None)


def no_sync(wrapped: nn.Module, last_micro: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if not last_micro and hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    return contextlib.nullcontext()


