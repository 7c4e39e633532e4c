"""Long-prefill checks for bench/scale.py (issue 13 items 4 and 5): what the host costs between chunks, and memory.

- `overlap_rows`: one prompt prefilled twice, with the runner's overlap off (pageable copy: torch waits for the
  stream before every chunk, LM head on every chunk: the engine before) and on (pinned copy, no wait, LM head only
  on the last chunk). Per variant: seconds, the GPU's idle gap between one chunk's forward and the next (CUDA events
  around the model's forward), the host's time from `run()` to the forward, and whether the last chunk's logits are
  bit-equal between the variants.
- `memory_row`: torch.cuda.max_memory_allocated of every GPU after a prefill, next to the memory plan's prediction
  (engine/model/memory_plan.py) for the same chunk: as the engine would hold it (KV of this prompt) and as this
  bench allocated it (its cache sized for the longest prompt; the decode graphs it captured).
"""
import statistics
import time

import torch
import torch.distributed as dist

from engine.model.memory_plan import GB, plan_memory


class ForwardClock:
    """CUDA events around every forward of `model`, and the host's time from a `run()` call to its forward."""

    def __init__(self, runner):
        self.runner, self.events, self.host_ms, self._entered = runner, [], [], None
        self._hooks = [runner.model.register_forward_pre_hook(self._start),
                       runner.model.register_forward_hook(self._end)]
        self._run = runner.run
        runner.run = self._timed_run

    def _timed_run(self, *args, **kw):
        self._entered = time.perf_counter()
        return self._run(*args, **kw)

    def _start(self, module, args):
        if self._entered is not None:
            self.host_ms.append((time.perf_counter() - self._entered) * 1e3)
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.events.append([event, None])

    def _end(self, module, args, out):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.events[-1][1] = event

    def close(self) -> dict:
        for h in self._hooks:
            h.remove()
        self.runner.run = self._run
        torch.cuda.synchronize()
        timed = self.events[1:]  # the first forward is run_prefill's warm-up chunk, followed by a host sync
        gaps = [a[1].elapsed_time(b[0]) for a, b in zip(timed, timed[1:])]
        busy = [s.elapsed_time(e) for s, e in timed]
        return {"chunks": len(timed), "gpu_gap_ms_median": statistics.median(gaps) if gaps else None,
                "gpu_gap_ms_max": max(gaps, default=None), "gpu_gap_ms_total": sum(gaps),
                "forward_ms_median": statistics.median(busy) if busy else None,
                "host_to_forward_ms_median": statistics.median(self.host_ms[1:]) if self.host_ms[1:] else None}


def overlap_rows(runner, run_prefill, length: int, chunk: int, label: str) -> list[dict]:
    """The same prompt with the runner's overlap off, then on (a warm run of each first is run_prefill's own)."""
    rows, last = [], {}
    for overlap in (False, True):
        runner.overlap = overlap
        clock = ForwardClock(runner) if torch.cuda.is_available() and runner.device.type == "cuda" else None
        try:
            seconds, _, logits = run_prefill(runner, length, chunk, False, lm_head_every_chunk=not overlap)
        finally:
            stats = clock.close() if clock else {}
            runner.overlap = True
        last[overlap] = logits
        rows.append({"test": f"{label} prefill {length} overlap {'on' if overlap else 'off'}", "seconds": seconds,
                     "tok_s": length / seconds, "chunk": chunk, **stats})
    same = last[True] is not None and last[False] is not None and torch.equal(last[True], last[False])
    rows[-1]["last_logits_bit_equal_to_off"] = same if last[True] is not None else None
    if last[True] is not None and not same:  # a race, or kernels that are not deterministic? off once more says
        runner.overlap = False
        try:
            again = run_prefill(runner, length, chunk, False, lm_head_every_chunk=True)[2]
        finally:
            runner.overlap = True
        rows[0]["last_logits_bit_equal_off_twice"] = torch.equal(again, last[False])
        rows[-1]["max_abs_diff_to_off"] = (last[True] - last[False]).abs().max().item()
    rows[-1]["saved_s"] = rows[0]["seconds"] - rows[1]["seconds"]
    return rows


def bytes_of(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def memory_row(model, cfg, cache, runner, tp: int, length: int, chunk: int, measured: float | None) -> dict:
    """Measured peak of every GPU (GB) next to the plan's prediction for this prefill (collective under TP)."""
    peaks = [measured]
    if dist.is_initialized():
        peaks = [None] * dist.get_world_size()
        dist.all_gather_object(peaks, measured)
    gpu = torch.cuda.mem_get_info()[1] if torch.cuda.is_available() else 80 << 30
    plan = plan_memory(cfg, tp, model.quantization, torch.bfloat16, gpu, prefill_chunk=chunk, max_model_len=length)
    plan.graph_bytes = runner.graphs.stats.get("bytes", 0) if runner.graphs is not None else 0
    held = bytes_of(model.parameters())
    cache_bytes = bytes_of([*cache.keys.values(), *cache.values.values(), *cache.states.values()])
    parts = plan.prefill_parts()
    as_allocated = held + cache_bytes + parts["graphs"] + parts["activations"]
    row = {"test": f"memory prefill {length}", "measured_peak_GB_per_gpu": peaks,
           "plan_peak_GB": plan.prefill_peak() / GB, "plan_parts_GB": {k: v / GB for k, v in parts.items()},
           "plan_as_allocated_GB": as_allocated / GB, "weights_held_GB": held / GB,
           "plan_weights_GB": plan.weight_bytes / GB, "cache_allocated_GB": cache_bytes / GB, "chunk": chunk}
    if all(p is not None for p in peaks):
        row["measured_minus_plan_as_allocated_GB"] = max(peaks) - as_allocated / GB
    return row
