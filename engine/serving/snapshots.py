"""Saved model state of finished (and half-finished) sequences, so a follow-up turn prefills only its new tokens.

A snapshot covers an exact token sequence: every lightning state of the sequence (copied out of its slot) and the
softmax KV of its tokens. Tiers:
- device: states copied on the device, KV kept in place by holding a reference on the sequence's KV blocks;
- host:   states and KV rows copied to CPU memory;
- disk:   the host form written to a file.
With a `SharedStates` directory (`--state-dir`, storage every replica reads) each kept snapshot is also written
there, and an admission query takes a longer prefix from it than the local tiers hold: a session that moves to
another replica restores what the previous one saved instead of re-reading its history.
Which snapshot to keep, demote or drop is decided by `StateCache` (bookkeeping, no tensors); this file moves the
tensors. Restoring copies bit-identical data into the new sequence's slot and blocks.
"""
import itertools
import secrets
import tempfile
from pathlib import Path

import torch

from .block_manager import BlockAllocator, blocks_for
from ..runtime.cache import DeviceSnap, HostSnap, ModelCache
from .sequence import Sequence
from .shared_states import SharedHit, SharedStates
from .state_cache import StateCache, StateEntry, TokenChain


class SnapshotKeeper:
    def __init__(self, cache: ModelCache, blocks: BlockAllocator, device_bytes: int, host_bytes: int,
                 disk_bytes: int = 0, disk_dir: str | None = None, shared: SharedStates | None = None):
        self.cache, self.blocks, self.shared = cache, blocks, shared
        tiers = [("device", device_bytes), ("host", host_bytes)]
        if disk_bytes > 0:
            tiers.append(("disk", disk_bytes))
            self.disk_dir = Path(disk_dir or tempfile.mkdtemp(prefix="m1-states-"))
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self.index = StateCache(tiers, mover=self._move)
        self.pending: list[tuple] = []  # (tokens, handle, nbytes, chain, tier) taken during a step
        self.candidates: dict[str, StateEntry] = {}  # request id -> the entry its restore() query found
        self.chains: dict[str, TokenChain] = {}  # request id -> its tokens' block hash chain
        self._names = itertools.count()
        self._run = secrets.token_hex(4)  # file names unique across runs sharing a disk dir

    def nbytes(self, num_tokens: int) -> int:
        return self.cache.slot_bytes + num_tokens * self.cache.token_bytes

    # --- taking snapshots -------------------------------------------------------------------------------------
    def keep(self, seq: Sequence, num_tokens: int, on_device: bool = True) -> None:
        """Copy the state of `seq.token_ids[:num_tokens]` (its slot must hold exactly that many tokens' state, and its
        blocks their KV) now; it enters the index at `flush()` so nothing moves during a step."""
        if num_tokens < 1:
            return
        tokens, chain = self._chain_of(seq).prefix(num_tokens)
        states = {l: s[seq.state_slot].clone() for l, s in self.cache.states.items()}
        held = seq.block_table[:blocks_for(num_tokens, self.cache.block_size)]
        if on_device:
            self.blocks.incref(held)
            handle = DeviceSnap(states, list(held), num_tokens)
        else:
            handle = self._to_host(DeviceSnap(states, list(held), num_tokens))
        self.pending.append((tokens, handle, self.nbytes(num_tokens), chain, "device" if on_device else "host"))

    def flush(self) -> None:
        """File the snapshots taken this step, each in the tier its copy lives in (a preempted sequence's host
        copy goes to the host tier: filed as a device snapshot, its next demotion would treat it as one)."""
        pending, self.pending = self.pending, []
        for tokens, handle, nbytes, chain, tier in pending:  # a newer snapshot of the same tokens replaces the older
            if self.shared is not None:
                self._save_shared(tokens, chain, handle)
            self.index.put(tokens, handle, nbytes, chain, tier)

    def _save_shared(self, tokens, chain, handle) -> None:
        self.shared.save(tokens, chain, handle if isinstance(handle, HostSnap) else self._to_host(handle))

    def reclaim(self, num_blocks: int) -> int:
        """Free up to `num_blocks` KV blocks for running sequences by demoting device snapshots (LRU first)."""
        before = self.blocks.num_free
        while self.blocks.num_free - before < num_blocks and self.index.demote_lru("device"):
            pass
        return self.blocks.num_free - before

    # --- restoring --------------------------------------------------------------------------------------------
    def restorable(self, seq: Sequence) -> int:
        """How many leading tokens of `seq` a kept snapshot covers (a pure query, used by the scheduler)."""
        tc = self._chain_of(seq)
        entry, n = self.index.lookup(tc.tokens, chain=tc.chain)
        if self.shared is not None:
            hit = self.shared.lookup(tc, len(seq.token_ids) - 1)
            if hit is not None and hit.num_tokens > n:
                entry, n = hit, hit.num_tokens
        self.candidates[seq.request_id] = entry
        return n

    def _claim(self, seq: Sequence) -> StateEntry:
        """The entry this sequence's admission query found, counted as used; it must still cover what was admitted."""
        entry = self.candidates.pop(seq.request_id, None)
        if entry is None or entry.tier is None or entry.num_tokens != seq.num_cached_tokens:
            raise RuntimeError(f"snapshot for request {seq.request_id!r} changed between scheduling and restore")
        if not isinstance(entry, SharedHit):
            self.index.record_use(entry)
        return entry

    def _chain_of(self, seq: Sequence) -> TokenChain:
        tc = self.chains.get(seq.request_id)
        if tc is None:
            tc = self.chains[seq.request_id] = TokenChain(self.index.block_tokens)
        return tc.extend_to(seq.token_ids)

    def forget(self, request_id: str) -> None:
        """The request is over: drop its cached hash chain."""
        self.chains.pop(request_id, None)
        self.candidates.pop(request_id, None)

    def restore_into(self, seq: Sequence) -> None:
        """Copy the snapshot of `seq.token_ids[:seq.num_cached_tokens]` into the slot and blocks `seq` now holds."""
        entry, n = self._claim(seq), seq.num_cached_tokens
        rows = self.cache.rows(seq.block_table, n)
        if isinstance(entry, SharedHit):
            handle = self.shared.load(entry)
        elif entry.tier == "disk":
            handle = HostSnap(**torch.load(entry.handle, weights_only=True))
        else:
            handle = entry.handle
        self.cache.write_slot(seq.state_slot, handle.states)
        if isinstance(handle, DeviceSnap):
            self.cache.copy_rows(self.cache.rows(handle.blocks, n), rows)
        else:
            self.cache.write_rows(rows, handle.keys, handle.values)

    # --- tiers ------------------------------------------------------------------------------------------------
    def _move(self, entry: StateEntry, src: str, dst: str | None):
        handle = entry.handle
        if dst is None:
            self._free(handle)
            return None
        if dst == "host":
            host = self._to_host(handle)
            self._free(handle)
            return host
        path = self.disk_dir / f"snap-{self._run}-{next(self._names)}.pt"
        torch.save(vars(handle), path)
        return str(path)

    def _to_host(self, snap: DeviceSnap) -> HostSnap:
        rows = self.cache.rows(snap.blocks, snap.num_tokens)
        keys, values = self.cache.read_rows(rows)
        host = lambda t: t.to("cpu", copy=True)  # pageable: pinning each snapshot cost more than it saved
        return HostSnap({l: host(s) for l, s in snap.states.items()},
                        {l: host(k) for l, k in keys.items()}, {l: host(v) for l, v in values.items()})

    def _free(self, handle) -> None:
        if isinstance(handle, DeviceSnap):
            self.blocks.free(handle.blocks)
        elif isinstance(handle, str):
            Path(handle).unlink(missing_ok=True)
