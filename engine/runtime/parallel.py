"""Tensor parallelism: rank 0's pool of worker processes (one per extra GPU) and the runner that drives them.

Rank 0 lives in the app process; ranks 1..N-1 are spawned processes that build their own model shard (`RankWorker`)
and then loop on method calls sent by rank 0 through a pipe: `pool.call("run", items)` sends the call to every
worker, runs it on rank 0, and waits for every rank's reply. Collectives inside the call (NCCL on CUDA, gloo on CPU)
keep the ranks in step. The scheduler and all bookkeeping stay on rank 0; workers only run what they are sent.
"""
import socket
import threading
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..model.tp_group import TIMEOUT, TPGroup, init_group, rank_device
from .worker import RankWorker, worker_main

POLL_S = 0.5  # how often a wait on a worker checks that it is alive
REPLY_TIMEOUT_S = TIMEOUT.total_seconds()  # a live worker that does not answer a call (M1_TP_TIMEOUT_S, 600 s)


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
        self.broken: str | None = None  # why the pool cannot be used any more (a rank died or stopped answering)
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
                child.close()  # only the worker holds its end: a dead worker's pipe then reads as closed
                self.conns.append(parent)
                self.procs.append(proc)
            try:
                self.tp = self._watched(lambda: init_group(0, size, init_method, device))
            except BaseException:
                self.close()
                raise
        else:
            self.tp = TPGroup()
        try:
            self._send_all("build", (spec,))
            try:
                self.local = RankWorker(spec, tp=self.tp, progress=progress)
            finally:
                self.load_stats = [None] + self._replies(timeout=None)
        except BaseException:
            self.close()
            raise
        self.load_stats[0] = self.local.load_stats

    def call(self, method: str, *args):
        """Run `method(*args)` on every rank (workers first, so collectives meet); rank 0's result."""
        return self.call_all(method, *args)[0]

    def call_all(self, method: str, *args) -> list:
        """Run `method(*args)` on every rank; the results of all ranks, rank 0 first."""
        self._send_all(method, args)
        try:
            local = getattr(self.local, method)(*args)
        finally:
            others = self._replies()
        return [local] + others

    def _replies(self, timeout: float | None = REPLY_TIMEOUT_S) -> list:
        results = []
        for rank, conn in enumerate(self.conns, start=1):
            status, value = self._recv(rank, conn, timeout)
            if status == "error":
                raise RuntimeError(f"tensor-parallel rank {rank} failed:\n{value}")
            results.append(value)
        return results

    # --- liveness: every wait on a worker checks that it still runs, so a dead rank is an error, not a hang ----
    def _send_all(self, method: str, args) -> None:
        self._check_alive()
        for rank, conn in enumerate(self.conns, start=1):
            try:
                conn.send((method, args))
            except (BrokenPipeError, EOFError, OSError):
                raise self._dead(rank) from None

    def _recv(self, rank: int, conn, timeout: float | None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while not conn.poll(POLL_S):
            if not self.procs[rank - 1].is_alive():
                raise self._dead(rank)
            if deadline is not None and time.monotonic() > deadline:
                self.broken = f"tensor-parallel rank {rank} did not answer within {timeout:.0f} s"
                raise RuntimeError(self.broken)
        try:
            return conn.recv()
        except (EOFError, OSError):
            raise self._dead(rank) from None

    def _check_alive(self) -> None:
        if self.broken:
            raise RuntimeError(self.broken)
        for rank, proc in enumerate(self.procs, start=1):
            if not proc.is_alive():
                raise self._dead(rank)

    def _dead(self, rank: int) -> RuntimeError:
        proc = self.procs[rank - 1]
        proc.join(0.1)
        self.broken = (f"tensor-parallel rank {rank} (pid {proc.pid}) died (exit code {proc.exitcode}); "
                       "the engine cannot run without it: restart the server")
        return RuntimeError(self.broken)

    def _watched(self, fn):
        """Run `fn` (e.g. joining the process group, which waits for every rank) on a thread while checking that
        the workers live: a worker that dies at start-up is an error here, not a wait of the group's timeout."""
        box = {}

        def run():
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                box["error"] = e
        thread = threading.Thread(target=run, name="m1-tp-join", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(POLL_S)
            if thread.is_alive():
                self._check_alive()
        if "error" in box:
            raise box["error"]
        return box["value"]

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

    def run(self, items, all_logits: bool = False, need_logits: bool = True):
        return self.pool.call("run", items, all_logits, need_logits)
