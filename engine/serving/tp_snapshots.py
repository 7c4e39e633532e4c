"""Snapshots of model state under tensor parallelism: rank 0 keeps the index, every rank keeps its own shard.

Same policy as `SnapshotKeeper` (tiers, LRU, reclaim); its handles here are `ShardedSnap`s: an id that every rank's
`RankWorker` stores its state shard (and, off the device, KV shard) under, plus the KV blocks rank 0 holds for it.
"""
import itertools
from dataclasses import dataclass

from .block_manager import blocks_for
from .sequence import Sequence
from .shared_states import SharedHit
from .snapshots import SnapshotKeeper
from .state_cache import StateEntry


@dataclass
class ShardedSnap:
    sid: int
    blocks: list[int]
    num_tokens: int


class ShardedSnapshotKeeper(SnapshotKeeper):
    def __init__(self, pool, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pool = pool
        self._ids = itertools.count()

    def keep(self, seq: Sequence, num_tokens: int, on_device: bool = True) -> None:
        if num_tokens < 1:
            return
        tokens, chain = self._chain_of(seq).prefix(num_tokens)
        held = list(seq.block_table[:blocks_for(num_tokens, self.cache.block_size)])
        sid = next(self._ids)
        self.pool.call("snap_take", sid, seq.state_slot, held, num_tokens, on_device)
        if on_device:
            self.blocks.incref(held)
        self.pending.append((tokens, ShardedSnap(sid, held if on_device else [], num_tokens),
                             self.nbytes(num_tokens), chain, "device" if on_device else "host"))

    def restore_into(self, seq: Sequence) -> None:
        entry, n = self._claim(seq), seq.num_cached_tokens
        if isinstance(entry, SharedHit):  # every rank reads its own shard of the shared snapshot
            self.shared.restored += 1
            self.pool.call("snap_restore_shared", entry.stem, seq.state_slot, list(seq.block_table), n)
            return
        self.pool.call("snap_restore", entry.handle.sid, seq.state_slot, list(seq.block_table), n)

    def _save_shared(self, tokens, chain, handle) -> None:
        self.shared.save(tokens, chain, lambda stem: self.pool.call("snap_save_shared", handle.sid, stem))

    def _move(self, entry: StateEntry, src: str, dst: str | None):
        handle = entry.handle
        if dst is None:
            self._free(handle)
            return None
        if dst == "host":
            self.pool.call("snap_to_host", handle.sid)
        else:
            self.pool.call("snap_to_disk", handle.sid, str(self.disk_dir))
        if handle.blocks:
            self.blocks.free(handle.blocks)
        return ShardedSnap(handle.sid, [], handle.num_tokens)

    def _free(self, handle) -> None:
        if handle.blocks:
            self.blocks.free(handle.blocks)
        self.pool.call("snap_free", handle.sid)
