"""Bookkeeping for kept model-state snapshots, keyed by the exact token sequence each covers (no torch).

The runner snapshots a sequence's whole model state (all lightning states + its KV rows) when it finishes and at
chosen points (e.g. the end of a prompt, before the answer), and `put`s an opaque `handle` to it here. A later
request whose tokens extend a kept sequence restores that snapshot and prefills only the rest.

Index: a key is (hash chain over full blocks of `block_tokens` tokens, exact tail tuple). A lookup walks the query's
chain block by block and stops at the first block no kept sequence shares, so it costs O(matched_len / block)
hashes plus the candidates at each node, not O(entries x len). Blocks are chained with 128-bit BLAKE2b, so equal
chain hashes mean equal token prefixes (collisions are cryptographically negligible); tails are compared exactly.

Tiers (e.g. gpu, host, disk) each have a byte budget and an LRU order. A tier over budget demotes its least
recently used unpinned entry to the next tier through `mover(entry, from_tier, to_tier) -> new_handle`, or drops it
from the last tier with `mover(entry, tier, None)` (the runner frees the memory). An entry larger than a tier's
budget leaves it first. A demoted entry enters the next tier as most recently used. Pinned entries (being
restored) are never moved: when only pinned entries could make room, a newly put entry leaves instead.
"""
import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

KEY_BLOCK_TOKENS = 256


@dataclass(eq=False)
class StateEntry:
    """One kept snapshot: the tokens it covers, the runner's handle, its size and where it lives."""
    token_ids: array
    handle: object
    nbytes: int
    tier: str | None
    key: tuple = field(repr=False)
    chain: list[bytes] = field(repr=False)
    pin_count: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(eq=False)
class _Tier:
    name: str
    budget: int
    lru: OrderedDict = field(default_factory=OrderedDict)
    used: int = 0


def _next_hash(prev: bytes, block: array) -> bytes:
    return hashlib.blake2b(prev + block.tobytes(), digest_size=16).digest()


def _as_tokens(token_ids: Iterable[int]) -> array:
    return token_ids if isinstance(token_ids, array) and token_ids.typecode == "q" else array("q", token_ids)


class TokenChain:
    """An append-only token sequence (a request's) with the hash chain of its full blocks, computed once: the
    admission lookup and every snapshot of the request reuse it instead of re-hashing up to 1M tokens each time."""

    def __init__(self, block_tokens: int = KEY_BLOCK_TOKENS):
        self.tokens, self.chain, self.block_tokens = array("q"), [], block_tokens

    def extend_to(self, token_ids: list[int]) -> "TokenChain":
        """Catch up with `token_ids`, which must extend what this chain has seen."""
        if len(token_ids) > len(self.tokens):
            self.tokens.extend(token_ids[len(self.tokens):])
        size = self.block_tokens
        while (len(self.chain) + 1) * size <= len(self.tokens):
            j = len(self.chain)
            self.chain.append(_next_hash(self.chain[-1] if self.chain else b"", self.tokens[j * size:(j + 1) * size]))
        return self

    def prefix(self, n: int) -> tuple[array, list[bytes]]:
        return self.tokens[:n], self.chain[:n // self.block_tokens]


class StateCache:
    """Longest-prefix lookup of kept snapshots over tiers with byte budgets and LRU demotion."""

    def __init__(self, tiers: list[tuple[str, int]], mover: Callable[[StateEntry, str, str | None], object],
                 block_tokens: int = KEY_BLOCK_TOKENS):
        names = [name for name, _ in tiers]
        if not tiers or len(set(names)) != len(names):
            raise ValueError(f"tiers must be a non-empty list of uniquely named (name, bytes) pairs, got {tiers}")
        for name, budget in tiers:
            if budget < 0:
                raise ValueError(f"tier {name!r} has a negative byte budget ({budget})")
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
        self.tiers = [_Tier(name, budget) for name, budget in tiers]
        self.mover = mover
        self.block_tokens = block_tokens
        self.entries: dict[tuple, StateEntry] = {}
        self.by_node: dict[bytes, list[StateEntry]] = {}
        self.node_refs: dict[bytes, int] = {}
        self.hits = self.misses = self.reused_tokens = self.num_demoted = self.num_dropped = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, token_ids: Iterable[int]) -> bool:
        return self.get(token_ids) is not None

    def get(self, token_ids: Iterable[int]) -> StateEntry | None:
        """The entry covering exactly `token_ids`, if kept (no stats, no LRU update)."""
        tokens = _as_tokens(token_ids)
        return self.entries.get(self._key(tokens, self._chain(tokens, len(tokens) // self.block_tokens)))

    def put(self, token_ids: Iterable[int], handle: object, nbytes: int,
            chain: list[bytes] | None = None, tier: str | None = None) -> StateEntry:
        """Keep a snapshot covering exactly `token_ids` in `tier` (default: the first; replacing one with the same
        tokens). `chain`: the hash chain of the full blocks of `token_ids`, if the caller has it (see TokenChain).
        `tier` must be where `handle` lives: a handle already copied off the device enters a lower tier.

        Returns the entry; its `tier` is None if it was too large for every tier and has already been dropped.
        """
        tokens = _as_tokens(token_ids)
        if not tokens:
            raise ValueError("put: token_ids is empty; a snapshot must cover at least one token")
        if nbytes < 0:
            raise ValueError(f"put: nbytes must be >= 0, got {nbytes}")
        if chain is None or len(chain) != len(tokens) // self.block_tokens:
            chain = self._chain(tokens, len(tokens) // self.block_tokens)
        i = self._tier_index(tier) if tier is not None else 0
        key = self._key(tokens, chain)
        old = self.entries.get(key)
        if old is not None:
            if old.pin_count:
                raise ValueError(f"put: a pinned snapshot of these {len(tokens)} tokens is in use; check `in` first")
            self.discard(old)
        entry = StateEntry(tokens, handle, nbytes, self.tiers[i].name, key, chain)
        self._index(entry)
        self._tier_add(i, entry)
        self._enforce(i)
        return entry

    def adopt(self, token_ids: Iterable[int], handle: object, nbytes: int, tier: str) -> StateEntry | None:
        """Keep an existing snapshot directly in `tier` (e.g. a disk file of an earlier run). Returns the entry, or
        None when these tokens are already kept or it does not fit the tier's budget (nothing is kept then)."""
        i, tokens = self._tier_index(tier), _as_tokens(token_ids)
        chain = self._chain(tokens, len(tokens) // self.block_tokens)
        key = self._key(tokens, chain)
        if not tokens or key in self.entries or not 0 <= nbytes <= self.tiers[i].budget:
            return None
        entry = StateEntry(tokens, handle, nbytes, tier, key, chain)
        self._index(entry)
        self._tier_add(i, entry)
        self._enforce(i)
        return entry if entry.tier is not None else None

    def lookup(self, token_ids: Iterable[int], max_len: int | None = None,
               chain: list[bytes] | None = None) -> tuple[StateEntry | None, int]:
        """Longest kept sequence that is a prefix of `token_ids`, with its length (pure: no stats, no LRU update).

        The match is at most `max_len`, by default `len(token_ids) - 1` so at least one token is left to prefill
        (its logits give the next token). `chain`: the query's block hash chain, if known. Returns (None, 0) on a miss.
        """
        query = _as_tokens(token_ids)
        chain = chain or []
        limit, size = len(query) - 1 if max_len is None else min(max_len, len(query)), self.block_tokens
        best, node, j = None, b"", 0
        while True:
            for entry in self.by_node.get(node, ()):
                n = entry.num_tokens
                is_longer = n <= limit and (best is None or n > best.num_tokens)
                if is_longer and entry.token_ids[j * size:] == query[j * size:n]:
                    best = entry
            if (j + 1) * size > limit:
                break
            node = chain[j] if j < len(chain) else _next_hash(node, query[j * size:(j + 1) * size])
            j += 1
            if node not in self.node_refs:
                break
        return (None, 0) if best is None else (best, best.num_tokens)

    def match(self, token_ids: Iterable[int], max_len: int | None = None) -> tuple[StateEntry | None, int]:
        """`lookup`, counted as a use: hit/miss stats, reused tokens, and the entry becomes most recently used."""
        entry, matched_len = self.lookup(token_ids, max_len)
        if entry is None:
            self.misses += 1
        else:
            self.record_use(entry)
        return entry, matched_len

    def record_use(self, entry: StateEntry) -> None:
        """Count a restore of `entry` found by an earlier `lookup` (hit, reused tokens, most recently used)."""
        self.hits += 1
        self.reused_tokens += entry.num_tokens
        self.touch(entry)

    def touch(self, entry: StateEntry) -> None:
        """Mark `entry` most recently used in its tier."""
        self._tier(entry).lru.move_to_end(entry)

    def pin(self, entry: StateEntry) -> None:
        """Keep `entry` where it is (never demoted or dropped) until a matching `unpin`."""
        self._tier(entry)
        entry.pin_count += 1

    def unpin(self, entry: StateEntry) -> None:
        if entry.pin_count == 0:
            raise ValueError(f"unpin: entry of {entry.num_tokens} tokens is not pinned")
        entry.pin_count -= 1
        if entry.pin_count == 0 and entry.tier is not None:
            self._enforce(self._tier_index(entry.tier))

    def demote_lru(self, tier: str) -> StateEntry | None:
        """Move the least recently used unpinned entry of `tier` one tier down (dropped from the last); None if none.

        For reclaiming memory on demand, e.g. KV blocks held by device-tier snapshots.
        """
        i = self._tier_index(tier)
        victim = next((entry for entry in self.tiers[i].lru if entry.pin_count == 0), None)
        if victim is not None:
            self._demote(i, victim)
        return victim

    def discard(self, entry: StateEntry) -> None:
        """Drop `entry` now (the runner frees its memory via `mover(entry, tier, None)`)."""
        if entry.pin_count:
            raise ValueError(f"discard: entry of {entry.num_tokens} tokens is pinned")
        i = self._tier_index(self._tier(entry).name)
        self.mover(entry, entry.tier, None)
        self._drop(i, entry)

    def stats(self) -> dict:
        """Counters and the bytes held in each tier."""
        return {"hits": self.hits, "misses": self.misses, "reused_tokens": self.reused_tokens,
                "num_entries": len(self.entries), "num_demoted": self.num_demoted, "num_dropped": self.num_dropped,
                "bytes": {tier.name: tier.used for tier in self.tiers}}

    def _chain(self, tokens: array, num_blocks: int) -> list[bytes]:
        chain, node, size = [], b"", self.block_tokens
        for j in range(num_blocks):
            node = _next_hash(node, tokens[j * size:(j + 1) * size])
            chain.append(node)
        return chain

    def _key(self, tokens: array, chain: list[bytes]) -> tuple:
        return (chain[-1] if chain else b""), tuple(tokens[len(chain) * self.block_tokens:])

    def _index(self, entry: StateEntry) -> None:
        self.entries[entry.key] = entry
        self.by_node.setdefault(entry.key[0], []).append(entry)
        for node in entry.chain:
            self.node_refs[node] = self.node_refs.get(node, 0) + 1

    def _unindex(self, entry: StateEntry) -> None:
        del self.entries[entry.key]
        siblings = self.by_node[entry.key[0]]
        siblings.remove(entry)
        if not siblings:
            del self.by_node[entry.key[0]]
        for node in entry.chain:
            self.node_refs[node] -= 1
            if self.node_refs[node] == 0:
                del self.node_refs[node]

    def _tier(self, entry: StateEntry) -> _Tier:
        if entry.tier is None or entry not in self.tiers[self._tier_index(entry.tier)].lru:
            raise ValueError(f"entry of {entry.num_tokens} tokens is no longer kept (dropped or replaced)")
        return self.tiers[self._tier_index(entry.tier)]

    def _tier_index(self, name: str) -> int:
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise ValueError(f"unknown tier {name!r}; tiers are {[tier.name for tier in self.tiers]}")

    def _tier_add(self, i: int, entry: StateEntry) -> None:
        tier = self.tiers[i]
        tier.lru[entry] = None
        tier.used += entry.nbytes
        entry.tier = tier.name

    def _tier_remove(self, i: int, entry: StateEntry) -> None:
        tier = self.tiers[i]
        del tier.lru[entry]
        tier.used -= entry.nbytes

    def _drop(self, i: int, entry: StateEntry) -> None:
        self._tier_remove(i, entry)
        self._unindex(entry)
        entry.tier, entry.handle = None, None
        self.num_dropped += 1

    def _enforce(self, i: int) -> None:
        """Demote unpinned entries (oversized first, then least recently used) until tier `i` is within budget."""
        tier = self.tiers[i]
        while tier.used > tier.budget:
            unpinned = [entry for entry in tier.lru if entry.pin_count == 0]
            if not unpinned:
                return
            victim = next((entry for entry in unpinned if entry.nbytes > tier.budget), unpinned[0])
            self._demote(i, victim)

    def _demote(self, i: int, entry: StateEntry) -> None:
        to = self.tiers[i + 1].name if i + 1 < len(self.tiers) else None
        new_handle = self.mover(entry, self.tiers[i].name, to)
        if to is None:
            self._drop(i, entry)
            return
        self._tier_remove(i, entry)
        entry.handle = new_handle
        self._tier_add(i + 1, entry)
        self.num_demoted += 1
        self._enforce(i + 1)
