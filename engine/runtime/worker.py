"""One tensor-parallel rank's share of the engine: its model shard, cache shard, runner, and snapshot shards.

Rank 0 builds one in the app process; every other rank builds one in its worker process (engine/runtime/parallel.py) and
runs the methods rank 0 sends. Snapshots of model state are kept per rank under ids chosen by rank 0, which keeps
all the bookkeeping (which snapshot, which tier, which KV blocks).
"""
import dataclasses
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from .cache import DeviceSnap, HostSnap, ModelCache
from .graphs import probe_collective_capture
from ..model.config import ModelConfig
from ..model.layers.attention import kv_heads_of_rank
from ..model.model import MiniMaxM1
from ..model.tp_group import TPGroup, init_group, rank_device
from ..model.quant import check_quantization, stored_quantization
from .runner import ModelRunner
from .snap_files import load_snap, save_snap
from ..model.weights import load_weights


@dataclass
class ShardSpec:
    """What every rank needs to build its shard (sent to the workers, so plain data)."""
    model_dir: str
    dtype: torch.dtype
    device: str
    quantization: str | None = None
    kernel_impl: str | None = None     # None: Triton on CUDA, PyTorch references on CPU; or "torch" / "triton"
    attention_impl: str | None = None  # None: as kernel_impl; "sdpa": the softmax layers on SDPA


def check_tp(cfg: ModelConfig, size: int) -> None:
    """Raise ValueError naming the field when `size` ranks cannot split this model (checked before spawning)."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"tensor_parallel_size must be a positive integer, got {size!r}")
    tp = TPGroup(0, size)
    local_config(cfg, tp)
    tp.split(cfg.intermediate_size, "intermediate_size")


def local_config(cfg: ModelConfig, tp: TPGroup) -> ModelConfig:
    """The config as one rank sees its cache: its lightning heads and its kv heads."""
    _, heads = tp.split(cfg.num_heads, "num_attention_heads")
    _, kv_heads = kv_heads_of_rank(cfg.num_heads, cfg.num_kv_heads, tp)
    return dataclasses.replace(cfg, num_heads=heads, num_kv_heads=kv_heads)


class RankWorker:
    def __init__(self, spec: ShardSpec, tp: TPGroup, progress=None):
        self.spec, self.tp = spec, tp
        self.device = rank_device(spec.device, tp.rank)
        self.config = ModelConfig.from_dir(spec.model_dir)
        self.quantization = check_quantization(spec.quantization, stored_quantization(self.config.raw))
        t0 = time.perf_counter()
        self.model = MiniMaxM1(self.config, spec.dtype, self.device, tp, self.quantization)
        self.load_stats = load_weights(self.model, spec.model_dir, progress if tp.rank == 0 else None)
        self.model.set_kernel_impl(spec.kernel_impl, spec.attention_impl, self.device)
        self.load_stats["seconds"] = time.perf_counter() - t0
        self.cache: ModelCache | None = None
        self.runner: ModelRunner | None = None
        self.snaps: dict[int, object] = {}

    def free_memory(self) -> int:
        return torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else 0

    def make_cache(self, num_slots: int, num_blocks: int, block_size: int, max_model_len: int | None = None) -> None:
        cfg = local_config(self.config, self.tp)
        self.cache = ModelCache(cfg, num_slots, num_blocks, block_size, self.spec.dtype, self.device)
        self.runner = ModelRunner(self.model, self.cache, self.device, max_num_seqs=num_slots,
                                  max_model_len=max_model_len)

    def probe_graph_collective(self, timeout_s: float) -> str | None:
        """None when an all-reduce can be captured in a CUDA graph here, else why not (see runtime/graphs.py)."""
        return probe_collective_capture(self.device, timeout_s)

    def capture_graphs(self, max_bucket: int) -> dict:
        return self.runner.capture_graphs(max_bucket)

    def drop_graphs(self) -> None:
        self.runner.drop_graphs()

    def run(self, items, all_logits: bool = False, need_logits: bool = True):
        logits = self.runner.run(items, all_logits, need_logits)
        return logits if self.tp.rank == 0 else None

    def num_all_reduces(self) -> int:
        return self.tp.num_all_reduces

    # --- snapshot shards (ids and tiers decided by rank 0) -----------------------------------------------------
    def snap_take(self, sid: int, slot: int, blocks: list[int], num_tokens: int, on_device: bool) -> None:
        states = {l: s[slot].clone() for l, s in self.cache.states.items()}
        snap = DeviceSnap(states, list(blocks), num_tokens)
        self.snaps[sid] = snap if on_device else self._host(snap)

    def snap_to_host(self, sid: int) -> None:
        self.snaps[sid] = self._host(self.snaps[sid])

    def snap_to_disk(self, sid: int, directory: str) -> None:
        path = Path(directory) / f"snap-{sid}.rank{self.tp.rank}.pt"
        snap = self.snaps[sid]
        torch.save(vars(self._host(snap) if isinstance(snap, DeviceSnap) else snap), path)
        self.snaps[sid] = str(path)

    def snap_save_shared(self, sid: int, stem: str) -> None:
        """Write this rank's shard of snapshot `sid` to the shared state directory (engine.serving.shared_states)."""
        snap = self.snaps[sid]
        if isinstance(snap, str):
            snap = HostSnap(**torch.load(snap, weights_only=True))
        save_snap(stem, self._host(snap) if isinstance(snap, DeviceSnap) else snap, self.tp.rank)

    def snap_restore_shared(self, stem: str, slot: int, block_table: list[int], num_tokens: int) -> None:
        snap = load_snap(stem, self.tp.rank)
        self.cache.write_slot(slot, snap.states)
        self.cache.write_rows(self.cache.rows(block_table, num_tokens), snap.keys, snap.values)

    def snap_free(self, sid: int) -> None:
        snap = self.snaps.pop(sid, None)
        if isinstance(snap, str):
            Path(snap).unlink(missing_ok=True)

    def snap_restore(self, sid: int, slot: int, block_table: list[int], num_tokens: int) -> None:
        snap = self.snaps[sid]
        if isinstance(snap, str):
            snap = HostSnap(**torch.load(snap, weights_only=True))
        rows = self.cache.rows(block_table, num_tokens)
        self.cache.write_slot(slot, snap.states)
        if isinstance(snap, DeviceSnap):
            self.cache.copy_rows(self.cache.rows(snap.blocks, num_tokens), rows)
        else:
            self.cache.write_rows(rows, snap.keys, snap.values)

    def _host(self, snap: DeviceSnap) -> HostSnap:
        keys, values = self.cache.read_rows(self.cache.rows(snap.blocks, snap.num_tokens))
        pin = self.device.type == "cuda"
        host = lambda t: t.to("cpu").pin_memory() if pin else t.to("cpu", copy=True)
        return HostSnap({l: host(s) for l, s in snap.states.items()},
                        {l: host(k) for l, k in keys.items()}, {l: host(v) for l, v in values.items()})


def worker_main(rank: int, size: int, init_method: str, device: str, conn) -> None:
    """A spawned rank's process: join the group, build its `RankWorker`, run the methods rank 0 sends."""
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
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
