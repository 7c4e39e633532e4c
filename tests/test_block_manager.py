"""KV block allocator, state-slot pool and CacheManager: invariants, all-or-nothing admission, full pools after use."""
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.serving.block_manager import BlockAllocator, CacheManager, SlotPool, blocks_for
from engine.serving.sequence import Sequence, SequenceStatus

ENGINE_DIR = Path(__file__).resolve().parents[1] / "engine"


def import_without_package_init(*modules: str) -> subprocess.CompletedProcess:
    """Import engine modules in a fresh interpreter, bypassing engine/__init__.py; fail if torch got imported."""
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('engine'); pkg.__path__ = [{str(ENGINE_DIR)!r}]; sys.modules['engine'] = pkg\n"
        + "".join(f"import {m}\n" for m in modules)
        + "leaked = sorted(m for m in sys.modules if m.split('.')[0] == 'torch')\n"
        "assert not leaked, leaked\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def make_seq(request_id="r", num_prompt_tokens=5) -> Sequence:
    return Sequence(request_id, list(range(1, num_prompt_tokens + 1)), sampling_params=None)


def test_modules_import_without_torch():
    result = import_without_package_init("engine.serving.sequence", "engine.serving.block_manager")
    assert result.returncode == 0, result.stderr


def test_torch_check_can_fail():
    result = import_without_package_init("torch")
    assert result.returncode != 0 and "torch" in result.stderr


def test_sequence_properties():
    seq = Sequence("a", [5, 6, 7], sampling_params=None)
    seq.append_token(9)
    assert (seq.num_tokens, seq.num_completion_tokens, seq.completion_token_ids, seq.last_token) == (4, 1, [9], 9)
    assert seq.status is SequenceStatus.WAITING and seq.num_uncomputed_tokens == 4
    seq.block_size = 3
    assert seq.num_blocks == 2
    with pytest.raises(ValueError, match="'empty'.*empty"):
        Sequence("empty", [], sampling_params=None)


def test_blocks_for():
    assert [blocks_for(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_allocate_free_and_ref_counts():
    alloc = BlockAllocator(num_blocks=4, block_size=2)
    ids = alloc.allocate(3)
    assert len(set(ids)) == 3 and alloc.num_free == 1
    alloc.incref(ids[:1])
    alloc.free(ids)
    assert alloc.num_free == 3, "the shared block stays allocated until its second free"
    alloc.free(ids[:1])
    assert alloc.num_free == 4
    with pytest.raises(ValueError, match=f"block {ids[0]} is not allocated"):
        alloc.free(ids[:1])
    with pytest.raises(ValueError, match="out of range"):
        alloc.free([4])
    with pytest.raises(ValueError, match="cannot allocate 5 blocks: 4 free"):
        alloc.allocate(5)
    with pytest.raises(ValueError, match="num_blocks"):
        BlockAllocator(0, 2)


def test_allocator_edges_one_block_of_one_token_and_zero_blocks():
    alloc = BlockAllocator(num_blocks=1, block_size=1)
    with pytest.raises(ValueError, match="block 0 is not allocated"):
        alloc.free([0])
    assert alloc.allocate(0) == [] and alloc.num_free == 1
    assert alloc.allocate(1) == [0] and alloc.num_free == 0
    with pytest.raises(ValueError, match="block_size"):
        BlockAllocator(2, 0)


def test_ensure_can_fit_release():
    alloc = BlockAllocator(num_blocks=3, block_size=4)
    seq = make_seq()
    alloc.ensure(seq, 5)
    assert len(seq.block_table) == 2 and seq.block_size == 4
    alloc.ensure(seq, 3)
    assert len(seq.block_table) == 2, "ensure never shrinks"
    seq.num_computed_tokens = 5
    assert alloc.max_tokens(seq) == 12
    assert alloc.can_fit(seq, 7) and not alloc.can_fit(seq, 8)
    alloc.release(seq)
    assert seq.block_table == [] and alloc.num_free == 3
    with pytest.raises(ValueError, match="cannot allocate"):
        alloc.ensure(seq, 13)
    assert alloc.num_free == 3


def test_slot_pool():
    pool = SlotPool(2)
    a, b = pool.acquire(), pool.acquire()
    assert {a, b} == {0, 1} and pool.acquire() is None and pool.num_free == 0
    pool.release(a)
    with pytest.raises(ValueError, match=f"slot {a} is not held"):
        pool.release(a)
    with pytest.raises(ValueError, match="out of range"):
        pool.release(7)
    assert pool.acquire() == a


def test_a_fresh_slot_pool_holds_nothing_and_needs_a_slot():
    with pytest.raises(ValueError, match=r"num_slots \(0\) must be >= 1"):
        SlotPool(0)
    pool = SlotPool(2)
    with pytest.raises(ValueError, match="slot 1 is not held"):
        pool.release(1)
    with pytest.raises(ValueError, match=r"slot 2 out of range \[0, 2\)"):
        pool.release(2)


def test_admit_is_all_or_nothing():
    cache = CacheManager(num_blocks=4, block_size=4, num_slots=1)
    big, small, other = make_seq("big"), make_seq("small"), make_seq("other")
    assert not cache.admit(big, 17)
    assert big.state_slot is None and big.block_table == [] and cache.is_full
    assert cache.admit(small, 5)
    assert small.state_slot == 0 and len(small.block_table) == 2
    assert not cache.admit(other, 1), "no slot left"
    assert other.block_table == [] and cache.blocks.num_free == 2
    with pytest.raises(ValueError, match="'small' already holds"):
        cache.admit(small, 1)


def test_admit_refuses_a_sequence_holding_only_a_slot_or_only_blocks():
    cache = CacheManager(num_blocks=4, block_size=4, num_slots=2)
    slot_only, blocks_only = make_seq("slot_only"), make_seq("blocks_only")
    assert cache.admit(slot_only, 0) and slot_only.state_slot is not None and slot_only.block_table == []
    with pytest.raises(ValueError, match="'slot_only' already holds"):
        cache.admit(slot_only, 1)
    cache.blocks.ensure(blocks_only, 4)
    with pytest.raises(ValueError, match="'blocks_only' already holds"):
        cache.admit(blocks_only, 4)


def test_grow_and_release():
    cache = CacheManager(num_blocks=3, block_size=4, num_slots=2)
    seq = make_seq()
    assert cache.admit(seq, 4)
    assert cache.grow(seq, 12) and len(seq.block_table) == 3
    assert not cache.grow(seq, 13) and len(seq.block_table) == 3
    cache.release(seq)
    cache.release(seq)
    assert cache.is_full and seq.state_slot is None


def check_disjoint(cache: CacheManager, seqs: list[Sequence]) -> None:
    held = [b for s in seqs for b in s.block_table]
    slots = [s.state_slot for s in seqs if s.state_slot is not None]
    assert len(held) == len(set(held)) and len(slots) == len(set(slots))
    assert len(held) + cache.blocks.num_free == cache.num_blocks
    assert len(slots) + cache.slots.num_free == cache.slots.num_slots


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_random_operations_leave_pools_full(seed):
    rng = random.Random(seed)
    cache = CacheManager(num_blocks=16, block_size=4, num_slots=5)
    seqs = [make_seq(str(i)) for i in range(8)]
    for _ in range(500):
        seq = rng.choice(seqs)
        op = rng.choice(["admit", "grow", "release"])
        if op == "admit" and seq.state_slot is None:
            cache.admit(seq, rng.randint(1, 20))
        elif op == "grow" and seq.state_slot is not None:
            cache.grow(seq, rng.randint(1, 40))
        elif op == "release":
            cache.release(seq)
        check_disjoint(cache, seqs)
    for seq in seqs:
        cache.release(seq)
    assert cache.is_full
