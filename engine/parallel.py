"""Tensor parallelism: the rank group a layer talks to, and rank 0's pool of worker processes (one per extra GPU).

Rank 0 lives in the app process; ranks 1..N-1 are spawned processes that build their own model shard (`RankWorker`)
and then loop on method calls sent by rank 0 through a pipe: `pool.call("run", items)` sends the call to every
worker, runs it on rank 0, and waits for every rank's reply. Collectives inside the call (NCCL on CUDA, gloo on CPU)
keep the ranks in step. The scheduler and all bookkeeping stay on rank 0; workers only run what they are sent.
"""
import os
import socket
import traceback
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _worker_main(rank: int, size: int, init_method: str, device: str, conn) -> None:
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    from .worker import RankWorker
    tp = init_group(rank, size, init_method, device)
    worker = None
    try:
        while True:
            try:
                method, args = conn.recv()
            except EOFError:  # rank 0 went away without close()
                break
            if method == "shutdown":
                break
            try:
                if method == "build":
                    worker = RankWorker(*args, tp=tp)
                    result = worker.load_stats
                else:
                    result = getattr(worker, method)(*args)
                conn.send(("ok", result))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        dist.destroy_process_group()


class WorkerPool:
    """Rank 0's handle on all ranks: `call(method, *args)` runs `RankWorker.method` everywhere, returns rank 0's result.

    At size 1 nothing is spawned and no process group exists: calls run on the local worker only.
    """

    def __init__(self, spec, size: int, progress=None):
        from .worker import RankWorker
        self.size, self.conns, self.procs = size, [], []
        device = torch.device(spec.device)
        if size > 1:
            if dist.is_initialized():
                raise RuntimeError("a tensor-parallel engine is already running in this process; close() it first")
            last = rank_device(device, size - 1)
            if device.type == "cuda" and torch.cuda.device_count() <= last.index:
                raise ValueError(f"tensor_parallel_size={size} from {device} needs GPUs up to {last}; "
                                 f"{torch.cuda.device_count()} visible")
            init_method = f"tcp://127.0.0.1:{free_port()}"
            ctx = mp.get_context("spawn")
            for rank in range(1, size):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(rank, size, init_method, spec.device, child), daemon=True)
                proc.start()
                self.conns.append(parent)
                self.procs.append(proc)
            self.tp = init_group(0, size, init_method, device)
        else:
            self.tp = TPGroup()
        try:
            for conn in self.conns:
                conn.send(("build", (spec,)))
            try:
                self.local = RankWorker(spec, tp=self.tp, progress=progress)
            finally:
                self.load_stats = [None] + self._replies()
        except BaseException:
            self.close()
            raise
        self.load_stats[0] = self.local.load_stats

    def call(self, method: str, *args):
        """Run `method(*args)` on every rank (workers first, so collectives meet); rank 0's result."""
        return self.call_all(method, *args)[0]

    def call_all(self, method: str, *args) -> list:
        """Run `method(*args)` on every rank; the results of all ranks, rank 0 first."""
        for conn in self.conns:
            conn.send((method, args))
        try:
            local = getattr(self.local, method)(*args)
        finally:
            others = self._replies()
        return [local] + others

    def _replies(self) -> list:
        results = []
        for rank, conn in enumerate(self.conns, start=1):
            status, value = conn.recv()
            if status == "error":
                raise RuntimeError(f"tensor-parallel rank {rank} failed:\n{value}")
            results.append(value)
        return results

    def close(self) -> None:
        """Stop the workers and leave the process group (a new engine may then start one)."""
        for conn in self.conns:
            try:
                conn.send(("shutdown", ()))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
        self.size = 1


class ParallelRunner:
    """The engine's runner under tensor parallelism: every rank runs the step's packed inputs; logits on rank 0."""

    def __init__(self, pool: WorkerPool):
        self.pool = pool

    def run(self, items, all_logits: bool = False):
        return self.pool.call("run", items, all_logits)
