"""Tensor parallelism: rank 0's pool of worker processes (one per extra GPU) and the runner that drives them.

Rank 0 lives in the app process; ranks 1..N-1 are spawned processes that build their own model shard (`RankWorker`)
and then loop on method calls sent by rank 0 through a pipe: `pool.call("run", items)` sends the call to every
worker, runs it on rank 0, and waits for every rank's reply. Collectives inside the call (NCCL on CUDA, gloo on CPU)
keep the ranks in step. The scheduler and all bookkeeping stay on rank 0; workers only run what they are sent.
"""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..model.tp_group import TPGroup, init_group, rank_device
from .worker import RankWorker, worker_main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerPool:
    """Rank 0's handle on all ranks: `call(method, *args)` runs `RankWorker.method` everywhere, returns rank 0's result.

    At size 1 nothing is spawned and no process group exists: calls run on the local worker only.
    """

    def __init__(self, spec, size: int, progress=None):
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
                proc = ctx.Process(target=worker_main, args=(rank, size, init_method, spec.device, child), daemon=True)
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
