"""The tensor-parallel rank group a layer talks to: its rank, its size, and the two collectives the network uses.

The network receives a `TPGroup` as an argument; `init_group` joins the process group (NCCL on CUDA, gloo on CPU).
Spawning worker processes lives above the network, in engine/runtime/parallel.py.
"""
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(seconds=int(os.environ.get("M1_TP_TIMEOUT_S", "600")))


@dataclass
class TPGroup:
    """This rank's place in the tensor-parallel group; collectives are no-ops at size 1."""
    rank: int = 0
    size: int = 1
    num_all_reduces: int = 0

    def split(self, total: int, what: str) -> tuple[int, int]:
        """(start, count) of this rank's equal share of `total` items; `what` names them in the error."""
        if total % self.size:
            raise ValueError(f"{what}={total} is not divisible by tensor_parallel_size={self.size}")
        count = total // self.size
        return self.rank * count, count

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks, in place."""
        if self.size > 1:
            dist.all_reduce(x)
            self.num_all_reduces += 1
        return x

    def gather_last_dim(self, x: torch.Tensor) -> torch.Tensor | None:
        """Concatenate every rank's `x` along the last dim on rank 0 (others get None)."""
        if self.size == 1:
            return x
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)] if self.rank == 0 else None
        dist.gather(x, parts, dst=0)
        return torch.cat(parts, dim=-1) if self.rank == 0 else None



def rank_device(device, rank: int) -> torch.device:
    """Rank r's device: the r-th GPU after the one rank 0 uses (CPU stays CPU)."""
    device = torch.device(device)
    return torch.device("cuda", (device.index or 0) + rank) if device.type == "cuda" else device


def init_group(rank: int, size: int, init_method: str, device) -> TPGroup:
    """Join the default process group (NCCL for CUDA, gloo otherwise) and return this rank's TPGroup."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(rank_device(device, rank))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size, timeout=TIMEOUT)
    return TPGroup(rank, size)


