"""A bench for SnapshotKeeper without a model (tests/test_snapshots.py): a real ModelCache and BlockAllocator whose
slots and KV rows are filled with random state as a prefill would leave them (K and V different), and helpers that
keep, admit and compare what a restore wrote, bit for bit."""
import torch

from engine.model.config import FULL, LINEAR, ModelConfig
from engine.runtime.cache import ModelCache
from engine.serving.block_manager import BlockAllocator
from engine.serving.sequence import Sequence
from engine.serving.snapshots import SnapshotKeeper

CFG = ModelConfig(hidden_size=8, intermediate_size=8, num_layers=4, num_heads=2, num_kv_heads=1, head_dim=4,
                  vocab_size=64, num_experts=1, top_k=1, layer_types=[LINEAR, FULL, LINEAR, FULL], rotary_dim=4,
                  rope_theta=1e4)
BLOCK = 4  # KV rows per block
N = 10  # tokens per snapshot: 3 blocks, the last one partly used
BIG = 1 << 30


class Rig:
    """A cache, an allocator and a keeper; sequences get slots in turn."""

    def __init__(self, tmp_path=None, device=BIG, host=BIG, disk=0, shared=None, num_blocks=40, **kw):
        self.cache = ModelCache(CFG, 8, num_blocks, BLOCK, torch.bfloat16)
        self.blocks = BlockAllocator(num_blocks, BLOCK)
        disk_dir = kw.get("disk_dir", tmp_path / "disk" if tmp_path and disk else None)
        self.keeper = SnapshotKeeper(self.cache, self.blocks, device, host, disk, disk_dir, shared=shared)
        self.next_slot, self.gen = 0, torch.Generator().manual_seed(0)

    def noise(self, *shape):
        return torch.randn(*shape, generator=self.gen).to(torch.bfloat16)

    def prefill(self, rid: str, tokens: list[int], room: int | None = None) -> Sequence:
        """A running sequence whose slot and KV rows hold (random) state for all of `tokens`."""
        seq = Sequence(rid, tokens, None)
        seq.state_slot, self.next_slot = self.next_slot, self.next_slot + 1
        self.blocks.ensure(seq, room or len(tokens))
        for s in self.cache.states.values():
            s[seq.state_slot] = torch.randn(s.shape[1:], generator=self.gen)
        rows = self.cache.rows(seq.block_table, len(tokens))
        for l in self.cache.keys:
            self.cache.keys[l][rows] = self.noise(len(rows), 1, 4)
            self.cache.values[l][rows] = self.noise(len(rows), 1, 4)
        return seq

    def state(self, seq: Sequence, n: int) -> dict:
        """Copies of the slot's states and the first `n` K and V rows of `seq`."""
        rows = self.cache.rows(seq.block_table, n)
        keys, values = self.cache.read_rows(rows)
        return {"states": {l: s[seq.state_slot].clone() for l, s in self.cache.states.items()},
                "keys": keys, "values": values}

    def finish(self, seq: Sequence) -> None:
        """The sequence ends: its blocks go back, and every free row and its slot are overwritten."""
        self.blocks.release(seq)
        free = list(self.blocks.free_ids)
        rows = self.cache.rows(free, len(free) * BLOCK)
        for l in self.cache.keys:
            self.cache.keys[l][rows] = self.noise(len(rows), 1, 4)
            self.cache.values[l][rows] = self.noise(len(rows), 1, 4)
        for s in self.cache.states.values():
            s[seq.state_slot] = torch.randn(s.shape[1:], generator=self.gen)

    def keep(self, rid: str, tokens: list[int], on_device=True) -> dict:
        """Prefill, keep all of it, file it, end the sequence; returns the state that was kept."""
        seq = self.prefill(rid, tokens)
        expected = self.state(seq, len(tokens))
        self.keeper.keep(seq, len(tokens), on_device=on_device)
        self.keeper.flush()
        self.finish(seq)
        return expected

    def admit(self, rid: str, tokens: list[int]) -> tuple[Sequence, int]:
        """What the scheduler and engine do: ask, take a slot and blocks (filled with a sentinel), restore."""
        seq = Sequence(rid, tokens, None)
        n = seq.num_cached_tokens = self.keeper.restorable(seq)
        seq.state_slot, self.next_slot = self.next_slot, self.next_slot + 1
        self.blocks.ensure(seq, len(tokens))
        rows = self.cache.rows(seq.block_table, len(tokens))
        for l in self.cache.keys:
            self.cache.keys[l][rows] = 7.0
            self.cache.values[l][rows] = 7.0
        self.before = {l: s.clone() for l, s in self.cache.states.items()}
        if n:
            self.keeper.restore_into(seq)
        return seq, n

    def tier(self, tokens: list[int]) -> str | None:
        entry = self.keeper.index.get(tokens)
        return entry.tier if entry else None


def same(a: dict, b: dict) -> bool:
    """Bit-identical, part by part (a V restored from K, or a state from another slot, differs)."""
    return all(a[part].keys() == b[part].keys() and all(torch.equal(a[part][l], b[part][l]) for l in a[part])
               for part in ("states", "keys", "values"))


def toks(n: int, start: int = 1) -> list[int]:
    return list(range(start, start + n))


def restored_exactly(rig: Rig, expected: dict, tokens: list[int], rid="next") -> bool:
    seq, n = rig.admit(rid, tokens + [99, 98])
    tail = rig.cache.rows(seq.block_table, len(seq.token_ids))[n:]
    untouched = all(bool((k[tail] == 7).all()) and bool((rig.cache.values[l][tail] == 7).all())
                    for l, k in rig.cache.keys.items())
    others = [i for i in range(rig.cache.num_slots) if i != seq.state_slot]  # other sequences' states: untouched
    untouched &= all(torch.equal(s[others], rig.before[l][others]) for l, s in rig.cache.states.items())
    rig.keeper.forget(rid)  # the request is over (its chain is cached by request id)
    return n == len(tokens) and same(rig.state(seq, n), expected) and untouched
