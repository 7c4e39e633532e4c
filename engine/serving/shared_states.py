"""Saved session states on storage every engine replica reads (`--state-dir`): a disk tier others can discover.

One snapshot = files named by the token-chain hash of the tokens it covers: `<n>-<key>.pt` (the host form:
lightning states and KV rows; under tensor parallelism one `<n>-<key>.rank<r>.pt` per rank, written by that rank)
and `<n>-<key>.json` (its identity: model, dtype, quantization, TP layout, block size, token count), the JSON
written last and every file renamed into place, so a reader never sees half a snapshot.
`<key>` is BLAKE2b over the chain hash of the last full block and the tail tokens (`StateCache`'s key), so finding
a prompt's longest saved prefix costs one directory listing plus a tail hash per candidate length.

A snapshot whose identity differs from the reader's (another model, dtype or TP layout) is refused: counted in
`refused`, logged, never restored. The directory is shared and append-mostly; `prune()` keeps it under a byte budget
(oldest first).
"""
import hashlib
import json
import logging
import os
from array import array
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime.cache import HostSnap
from ..runtime.snap_files import load_snap, save_snap, write_atomic
from .state_cache import TokenChain

log = logging.getLogger(__name__)
LENGTH_DIGITS = 10


def checkpoint_fingerprint(model_dir, sample_bytes: int = 1 << 20) -> str:
    """A cheap identity of a checkpoint's contents: its config and, per weight file, the name, size and the first
    and last `sample_bytes` (two checkpoints of one config with other weights differ here)."""
    h = hashlib.blake2b(digest_size=16)
    root = Path(model_dir)
    for path in sorted(p for p in root.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".pt")):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(sample_bytes))
            if size > 2 * sample_bytes:
                f.seek(size - sample_bytes)
                h.update(f.read(sample_bytes))
    return h.hexdigest()


@dataclass
class SharedHit:
    """A snapshot found on the shared storage for an admission query: its files' path without suffix, its size."""
    stem: str
    num_tokens: int
    tier: str = "shared"


class SharedStates:
    def __init__(self, root, identity: dict, block_tokens: int, max_bytes: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.identity = dict(identity)
        self.block_tokens, self.max_bytes = block_tokens, max_bytes
        self.saved = self.restored = self.refused = 0

    def stem(self, tokens: array, chain: list[bytes]) -> str:
        """The file name (without suffix) of a snapshot covering exactly `tokens` (`chain`: their full blocks)."""
        full = len(tokens) // self.block_tokens
        node = chain[full - 1] if full else b""
        key = hashlib.blake2b(node + tokens[full * self.block_tokens:].tobytes(), digest_size=16).hexdigest()
        return f"{len(tokens):0{LENGTH_DIGITS}d}-{key}"

    def save(self, tokens: array, chain: list[bytes], snap) -> str:
        """Write a snapshot (replacing one of the same tokens): a HostSnap, or `snap(stem)` writing the tensor
        files itself (each rank its shard); returns the files' path without suffix."""
        stem = str(self.root / self.stem(tokens, chain))
        if isinstance(snap, HostSnap):
            save_snap(stem, snap)
        else:
            snap(stem)
        meta = {**self.identity, "num_tokens": len(tokens)}
        write_atomic(f"{stem}.json", lambda f: f.write(json.dumps(meta, sort_keys=True).encode()))
        self.saved += 1
        if self.max_bytes:
            self.prune()
        return stem

    def lookup(self, tc: TokenChain, limit: int) -> SharedHit | None:
        """The longest saved prefix of `tc.tokens` of at most `limit` tokens with this engine's identity."""
        names = set(os.listdir(self.root))
        lengths = sorted({int(n[:LENGTH_DIGITS]) for n in names if n.endswith(".json") and n[:1].isdigit()},
                         reverse=True)
        for n in (n for n in lengths if 0 < n <= limit):
            stem = self.stem(*tc.prefix(n))
            if f"{stem}.json" in names and self._matches(stem):
                return SharedHit(str(self.root / stem), n)
        return None

    def load(self, hit: SharedHit, rank: int | None = None) -> HostSnap:
        """The tensors of a hit (of one rank's shard under tensor parallelism)."""
        self.restored += rank in (None, 0)
        return load_snap(hit.stem, rank)

    def prune(self) -> int:
        """Delete the oldest snapshots until the directory holds at most `max_bytes`; returns how many went."""
        metas = sorted(self.root.glob("*.json"), key=lambda p: p.stat().st_mtime)
        files = {m: [m, *self.root.glob(f"{m.stem}.*pt")] for m in metas}
        total, gone = sum(f.stat().st_size for group in files.values() for f in group), 0
        for meta in metas:
            if total <= self.max_bytes:
                break
            for f in files[meta]:  # the JSON first: readers stop finding it before its tensors go
                total -= f.stat().st_size
                f.unlink(missing_ok=True)
            gone += 1
        return gone

    def _matches(self, stem: str) -> bool:
        try:
            meta = json.loads((self.root / f"{stem}.json").read_text())
        except (OSError, ValueError):
            return False
        meta.pop("num_tokens", None)
        if meta != self.identity:
            self.refused += 1
            diff = sorted(k for k in set(meta) | set(self.identity) if meta.get(k) != self.identity.get(k))
            log.warning("refused saved state %s: written by another engine (differs in %s)", stem, diff)
            return False
        return True
