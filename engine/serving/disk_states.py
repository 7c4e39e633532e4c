"""The disk tier of the state cache across restarts: an index file beside the snapshot files, tagged with the
identity of the model and the cache layout that wrote them.

    persist(keeper, identity)   # at shutdown: every kept snapshot moves to disk (within its cap), index written
    adopt(keeper, identity)     # at start: the snapshots of a matching index rejoin the disk tier

A snapshot is raw tensors of one model's state in one layout: an index whose identity differs (another checkpoint,
dtype, tensor-parallel size, or cache geometry) is refused, and its files are removed, never restored.
"""
import hashlib
import json
import os
from pathlib import Path

INDEX_NAME = "index.json"
FORMAT = 1


def model_identity(model_dir: str, dtype, tensor_parallel_size: int, cache) -> dict:
    """What a saved state depends on: the checkpoint (config.json's hash; the weight files' names, sizes and
    modification times), the dtype, the TP layout and the cache geometry (bytes per slot and per token)."""
    root = Path(model_dir)
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.iterdir()
                     if p.suffix in (".safetensors", ".bin", ".pt"))
    return {"config_sha256": hashlib.sha256((root / "config.json").read_bytes()).hexdigest(),
            "weights": [list(w) for w in weights], "dtype": str(dtype), "tensor_parallel_size": tensor_parallel_size,
            "slot_bytes": int(cache.slot_bytes), "token_bytes": int(cache.token_bytes)}


def persist(keeper, identity: dict) -> int:
    """Move every snapshot of `keeper` to its disk tier (LRU ones beyond the cap are dropped) and write the index.
    Returns how many snapshots the index lists."""
    index = keeper.index
    for tier in ("device", "host"):
        while index.demote_lru(tier) is not None:
            pass
    entries = [{"tokens": list(entry.token_ids), "file": Path(entry.handle).name, "nbytes": entry.nbytes}
               for entry in index.tiers[-1].lru]  # least recently used first, as adopt() re-adds them
    tmp = keeper.disk_dir / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "identity": identity, "entries": entries}), encoding="utf-8")
    os.replace(tmp, keeper.disk_dir / INDEX_NAME)
    return len(entries)


def adopt(keeper, identity: dict) -> tuple[int, str | None]:
    """Put the snapshots listed in the disk dir's index back into the disk tier. Returns (how many, why refused):
    an index of another identity or format is refused and its snapshot files deleted."""
    path = keeper.disk_dir / INDEX_NAME
    if not path.is_file():  # files without an index (a crash after adopt) are nobody's: remove them
        for orphan in keeper.disk_dir.glob("snap-*.pt"):
            orphan.unlink(missing_ok=True)
        return 0, None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        saved = {"error": str(exc)}
    refused = None
    if saved.get("format") != FORMAT:
        refused = "unknown index format"
    elif saved.get("identity") != identity:
        changed = sorted(k for k in set(identity) | set(saved["identity"])
                         if identity.get(k) != saved["identity"].get(k))
        refused = f"saved by another model or layout ({', '.join(changed)} differ)"
    if refused:
        for stale in keeper.disk_dir.glob("snap-*.pt"):
            stale.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return 0, refused
    count = 0
    for item in saved["entries"]:
        file = keeper.disk_dir / item["file"]
        if file.is_file() and keeper.index.adopt(item["tokens"], str(file), item["nbytes"], "disk") is not None:
            count += 1
    path.unlink(missing_ok=True)  # rewritten at the next shutdown; a crash must not replay stale entries
    return count, None
