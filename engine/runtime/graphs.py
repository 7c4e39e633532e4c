"""CUDA graphs for decode steps: one graph per batch-size bucket, replayed with padding rows that write nowhere.

Buckets are 1, 2, 4, 8, 16, 32, then steps of 32 up to `max_num_seqs`; a decode batch of n runs the smallest bucket
>= n, its extra rows padding (see engine/model/context.py). Only buckets whose every kernel is capturable get a graph
(the fused MoE is up to kernels.moe.gemv.MAX_TOKENS tokens); larger decode batches run eagerly. The bucket choice and
padding are plain functions here so CPU tests exercise them through the eager path.

Under tensor parallelism each rank captures its own graphs with the all-reduces inside. Capturing NCCL collectives
once hung in a probe, so `probe_collective_capture` first captures one all-reduce on a separate communicator in a
thread with a hard timeout; a rank that fails or times out makes the engine stay eager.
"""
import threading
import time

import torch
import torch.distributed as dist

SMALL_BUCKETS = (1, 2, 4, 8, 16, 32)
STEP = 32


def graph_buckets(max_num_seqs: int) -> list[int]:
    """Batch-size buckets covering 1..max_num_seqs (the last one may exceed it)."""
    buckets = []
    for b in SMALL_BUCKETS:
        buckets.append(b)
        if b >= max_num_seqs:
            return buckets
    while buckets[-1] < max_num_seqs:
        buckets.append(buckets[-1] + STEP)
    return buckets


def bucket_for(n: int, buckets: list[int]) -> int | None:
    """The smallest bucket holding n rows, or None when n exceeds them all."""
    return next((b for b in buckets if b >= n), None)


class DecodeGraphs:
    """Captured graphs by bucket and their static logits; `capture(fn, prepare)` records fn(*prepare(B)) per bucket."""

    def __init__(self):
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.stats: dict = {}

    def __contains__(self, bucket: int) -> bool:
        return bucket in self.graphs

    def capture(self, buckets: list[int], prepare, fn, device) -> dict:
        """Largest bucket first so the smaller ones reuse its memory pool. Returns {seconds, bytes, buckets}."""
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # torch.cuda.graph empties the cache itself: measure from the same baseline
        free_before, t0 = torch.cuda.mem_get_info(device)[0], time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        for b in sorted(buckets, reverse=True):
            args = prepare(b)
            fn(*args)  # warm-up: compiles the kernels and sizes the workspaces outside the capture
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                self.outputs[b] = fn(*args)
            self.graphs[b] = graph
        torch.cuda.synchronize(device)
        self.stats = {"seconds": time.perf_counter() - t0, "bytes": free_before - torch.cuda.mem_get_info(device)[0],
                      "buckets": sorted(self.graphs)}
        return self.stats

    def replay(self, bucket: int) -> torch.Tensor:
        self.graphs[bucket].replay()
        return self.outputs[bucket]


def probe_collective_capture(device, timeout_s: float = 60.0) -> str | None:
    """Capture and replay one all-reduce on a fresh communicator, in a thread given `timeout_s`. None when it worked,
    else why not. Every rank must call it (the new group is collective); a hung capture stays on its own group."""
    group = dist.new_group(backend="nccl")
    x = torch.ones(1024, device=device)
    dist.all_reduce(x, group=group)  # the communicator is created eagerly, outside any capture
    torch.cuda.synchronize(device)
    result = {}

    def work():
        try:
            torch.cuda.set_device(device)
            y = torch.ones(1024, device=device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                dist.all_reduce(y, group=group)
            y.fill_(1.0)
            graph.replay()
            torch.cuda.synchronize(device)
            size = dist.get_world_size()
            result["error"] = None if float(y[0]) == size else f"replayed all-reduce gave {float(y[0])}, not {size}"
        except Exception as e:  # noqa: BLE001 - reported to rank 0, which falls back to eager
            result["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result["error"] if "error" in result else f"capture did not finish within {timeout_s:.0f} s"
