"""Bookkeeping for the two per-sequence cache resources (no torch; the runner owns the tensors).

- `BlockAllocator`: paged KV blocks of the softmax layers. Block `b` holds token rows
  `[b * block_size, (b + 1) * block_size)` of the KV tensors; token `i` of a sequence lives in
  `block_table[i // block_size]` at offset `i % block_size`. Blocks are ref-counted so a block may be shared
  (e.g. by a kept snapshot); it returns to the free list when its count drops to 0.
- `SlotPool`: the fixed-size lightning-state slots, one per running sequence.
- `CacheManager`: both together, all-or-nothing per sequence: `admit`, `grow`, `release`.

Misuse (double free, foreign ids, allocating more than is free) raises `ValueError`; these are bugs, not load.
"""
from collections import deque

from .sequence import Sequence


def blocks_for(num_tokens: int, block_size: int) -> int:
    """Blocks needed to hold `num_tokens` token rows."""
    return -(-num_tokens // block_size)


class BlockAllocator:
    """Free list + ref counts over `num_blocks` KV blocks of `block_size` tokens."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks ({num_blocks}) and block_size ({block_size}) must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        self.free_ids: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    def allocate(self, n: int) -> list[int]:
        """Take `n` free blocks (ref count 1 each)."""
        if not 0 <= n <= self.num_free:
            raise ValueError(f"cannot allocate {n} blocks: {self.num_free} free")
        ids = [self.free_ids.popleft() for _ in range(n)]
        for i in ids:
            self.ref_counts[i] = 1
        return ids

    def incref(self, ids: list[int]) -> None:
        """Share allocated blocks: each needs one more `free` before it is reusable."""
        for i in ids:
            self._check_held(i)
            self.ref_counts[i] += 1

    def free(self, ids: list[int]) -> None:
        """Drop one reference to each block; blocks reaching 0 return to the free list."""
        for i in ids:
            self._check_held(i)
            self.ref_counts[i] -= 1
            if self.ref_counts[i] == 0:
                self.free_ids.append(i)

    def _check_held(self, block_id: int) -> None:
        if not 0 <= block_id < self.num_blocks:
            raise ValueError(f"block id {block_id} out of range [0, {self.num_blocks})")
        if self.ref_counts[block_id] == 0:
            raise ValueError(f"block {block_id} is not allocated (double free?)")

    def max_tokens(self, seq: Sequence) -> int:
        """Most tokens `seq` could hold using its own blocks plus every free block."""
        return (len(seq.block_table) + self.num_free) * self.block_size

    def can_fit(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Whether `seq` can hold `seq.num_computed_tokens + num_new_tokens` tokens."""
        return seq.num_computed_tokens + num_new_tokens <= self.max_tokens(seq)

    def ensure(self, seq: Sequence, upto_tokens: int) -> None:
        """Append blocks to `seq.block_table` until it holds `upto_tokens` tokens (never shrinks)."""
        seq.block_size = self.block_size
        missing = blocks_for(upto_tokens, self.block_size) - len(seq.block_table)
        if missing > 0:
            seq.block_table.extend(self.allocate(missing))

    def release(self, seq: Sequence) -> None:
        """Free all of `seq`'s blocks and empty its table."""
        self.free(seq.block_table)
        seq.block_table = []


class SlotPool:
    """Free list over `num_slots` lightning-state slots; a slot is held by at most one sequence."""

    def __init__(self, num_slots: int):
        if num_slots < 1:
            raise ValueError(f"num_slots ({num_slots}) must be >= 1")
        self.num_slots = num_slots
        self.free_slots: deque[int] = deque(range(num_slots))
        self.is_held = [False] * num_slots

    @property
    def num_free(self) -> int:
        return len(self.free_slots)

    def acquire(self) -> int | None:
        """A free slot id, or None when all are held."""
        if not self.free_slots:
            return None
        slot = self.free_slots.popleft()
        self.is_held[slot] = True
        return slot

    def release(self, slot: int) -> None:
        if not 0 <= slot < self.num_slots:
            raise ValueError(f"slot {slot} out of range [0, {self.num_slots})")
        if not self.is_held[slot]:
            raise ValueError(f"slot {slot} is not held (double release?)")
        self.is_held[slot] = False
        self.free_slots.append(slot)


class CacheManager:
    """A sequence's slot and KV blocks, acquired and returned together."""

    def __init__(self, num_blocks: int, block_size: int, num_slots: int):
        self.blocks = BlockAllocator(num_blocks, block_size)
        self.slots = SlotPool(num_slots)

    @property
    def block_size(self) -> int:
        return self.blocks.block_size

    @property
    def num_blocks(self) -> int:
        return self.blocks.num_blocks

    @property
    def is_full(self) -> bool:
        """True when every block and slot is free (nothing is held)."""
        return self.blocks.num_free == self.blocks.num_blocks and self.slots.num_free == self.slots.num_slots

    def fits_at_all(self, num_tokens: int) -> bool:
        """Whether `num_tokens` tokens fit in the whole pool (else a sequence that long can never run)."""
        return blocks_for(num_tokens, self.block_size) <= self.num_blocks

    def admit(self, seq: Sequence, upto_tokens: int) -> bool:
        """Give `seq` a slot and blocks for its first `upto_tokens` tokens; False (holding nothing) if short."""
        if seq.state_slot is not None or seq.block_table:
            raise ValueError(f"request {seq.request_id!r} already holds cache resources")
        if self.slots.num_free == 0 or blocks_for(upto_tokens, self.block_size) > self.blocks.num_free:
            return False
        seq.state_slot = self.slots.acquire()
        self.blocks.ensure(seq, upto_tokens)
        return True

    def grow(self, seq: Sequence, upto_tokens: int) -> bool:
        """Ensure blocks for `upto_tokens` tokens; False (nothing allocated) if there are not enough free blocks."""
        if upto_tokens > self.blocks.max_tokens(seq):
            return False
        self.blocks.ensure(seq, upto_tokens)
        return True

    def release(self, seq: Sequence) -> None:
        """Return `seq`'s blocks and slot (idempotent for a sequence holding nothing)."""
        self.blocks.release(seq)
        if seq.state_slot is not None:
            self.slots.release(seq.state_slot)
            seq.state_slot = None
