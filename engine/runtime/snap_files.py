"""Snapshot tensors in files (the shared state directory, engine.serving.shared_states): one file per snapshot, or
one per rank's shard under tensor parallelism, each written to a temporary name and renamed into place."""
import os
from pathlib import Path

import torch

from .cache import HostSnap


def write_atomic(path, write) -> Path:
    """`write(file)` into a temporary file beside `path`, then rename it into place."""
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, final)
    return final


def shard_path(stem: str, rank: int | None) -> str:
    """The tensor file of a snapshot (`rank`: of that rank's shard, under tensor parallelism)."""
    return f"{stem}.pt" if rank is None else f"{stem}.rank{rank}.pt"


def save_snap(stem: str, snap: HostSnap, rank: int | None = None) -> None:
    write_atomic(shard_path(stem, rank), lambda f: torch.save(vars(snap), f))


def load_snap(stem: str, rank: int | None = None) -> HostSnap:
    return HostSnap(**torch.load(shard_path(stem, rank), weights_only=True))
