"""SnapshotKeeper on a real ModelCache and BlockAllocator, without a model: what a prefill leaves in a slot and its
KV rows is written here directly (random, K and V different), then kept, moved between tiers and restored.

Restores must be bit-identical (lightning states, K rows and V rows, each compared on its own), land exactly in the
first `n` rows of the new sequence, and survive the source slot and freed blocks being overwritten. Device snapshots
hold exactly their tokens' blocks; `reclaim` demotes least recently used ones until enough blocks are free.
"""
import pickle
from pathlib import Path

import pytest
import torch

from engine.runtime.cache import DeviceSnap, HostSnap
from engine.serving.sequence import Sequence
from engine.serving.shared_states import SharedHit, SharedStates
from engine.serving.snapshots import SnapshotKeeper
from engine.serving.state_cache import KEY_BLOCK_TOKENS
from snapshot_rig import BIG, BLOCK, N, Rig, restored_exactly, toks


@pytest.mark.parametrize("length", [N, KEY_BLOCK_TOKENS + 5])
@pytest.mark.parametrize("budgets, on_device, tier", [
    (dict(), True, "device"),
    (dict(), False, "host"),  # a preempted sequence's copy goes straight to the host tier
    (dict(device=0), True, "host"),  # demoted at once
    (dict(device=0, host=0, disk=BIG), True, "disk"),  # device -> host -> disk
])
def test_restore_from_each_tier_is_bit_identical(tmp_path, budgets, on_device, tier, length):
    rig = Rig(tmp_path, num_blocks=2 * length // BLOCK + 8, **budgets)
    expected = rig.keep("a", toks(length), on_device=on_device)
    assert rig.tier(toks(length)) == tier
    assert rig.keeper.index.stats()["bytes"][tier] == rig.cache.slot_bytes + length * rig.cache.token_bytes
    assert restored_exactly(rig, expected, toks(length))
    assert rig.keeper.index.stats()["hits"] == 1 and rig.keeper.index.stats()["reused_tokens"] == length


def test_a_snapshot_is_a_copy_taken_at_keep_time(tmp_path):
    rig = Rig(tmp_path, device=0)
    seq = rig.prefill("a", toks(N))
    expected = rig.state(seq, N)
    rig.keeper.keep(seq, N)
    rig.finish(seq)  # before flush: the slot and the (still held) blocks' neighbours are overwritten
    rig.keeper.flush()
    assert rig.tier(toks(N)) == "host" and restored_exactly(rig, expected, toks(N))


def test_a_device_snapshot_holds_exactly_the_blocks_of_its_tokens_until_it_leaves_the_device(tmp_path):
    rig = Rig(tmp_path)
    seq = rig.prefill("a", toks(N), room=4 * BLOCK)  # 4 blocks, 3 of them hold the 10 tokens
    held = seq.block_table[:3]
    rig.keeper.keep(seq, N)
    assert rig.keeper.pending and rig.keeper.index.stats()["num_entries"] == 0  # filed only at flush
    rig.keeper.flush()
    rig.finish(seq)
    assert rig.blocks.num_free == 40 - 3 and [rig.blocks.ref_counts[b] for b in held] == [1, 1, 1]
    entry = rig.keeper.index.get(toks(N))
    assert isinstance(entry.handle, DeviceSnap) and entry.handle.blocks == held and entry.handle.num_tokens == N
    assert rig.keeper.reclaim(1) == 3 and rig.blocks.num_free == 40  # demoted to the host: every block back
    assert isinstance(entry.handle, HostSnap) and entry.tier == "host"


def test_keeping_no_tokens_keeps_nothing_and_one_token_is_kept(tmp_path):
    rig = Rig(tmp_path)
    seq = rig.prefill("a", toks(N))
    rig.keeper.keep(seq, 0)
    assert rig.keeper.pending == [] and rig.blocks.ref_counts[seq.block_table[0]] == 1
    rig.keeper.keep(seq, 1)
    rig.keeper.flush()
    assert rig.tier(toks(1)) == "device" and rig.keeper.pending == []


def test_a_newer_snapshot_of_the_same_tokens_replaces_the_older_and_frees_its_blocks(tmp_path):
    rig = Rig(tmp_path)
    rig.keep("a", toks(N))
    expected = rig.keep("b", toks(N))
    assert len(rig.keeper.index) == 1 and rig.blocks.num_free == 40 - 3
    assert restored_exactly(rig, expected, toks(N))


def test_reclaim_demotes_least_recently_used_device_snapshots_until_enough_blocks_are_free(tmp_path):
    rig = Rig(tmp_path)
    for i, start in enumerate((100, 200, 300, 400)):
        rig.keep(f"k{i}", toks(N, start))  # 3 blocks each
    rig.admit("use-first", toks(N, 100) + [1])  # restoring the oldest makes it the most recently used
    tiers = lambda: [rig.tier(toks(N, s)) for s in (100, 200, 300, 400)]
    free = rig.blocks.num_free
    assert rig.keeper.reclaim(0) == 0 and tiers() == ["device"] * 4
    assert rig.keeper.reclaim(3) == 3 and tiers() == ["device", "host", "device", "device"]  # exactly enough
    assert rig.keeper.reclaim(4) == 6 and tiers() == ["device", "host", "host", "host"]  # two, not the restored
    assert rig.keeper.reclaim(100) == 3 and rig.blocks.num_free == free + 12  # then nothing is left to demote
    assert rig.keeper.reclaim(1) == 0


def test_restore_refuses_a_snapshot_that_changed_since_the_admission_query(tmp_path):
    rig = Rig(tmp_path)
    rig.keep("a", toks(N))
    seq = Sequence("late", toks(N) + [5], None)
    seq.num_cached_tokens = N
    with pytest.raises(RuntimeError, match="^snapshot for request 'late' changed between scheduling and restore$"):
        rig.keeper.restore_into(seq)  # never asked
    assert rig.keeper.restorable(seq) == N
    seq.num_cached_tokens = N - 1
    with pytest.raises(RuntimeError, match="'late'"):  # admitted for another length
        rig.keeper.restore_into(seq)
    assert rig.keeper.restorable(seq) == N
    rig.keeper.index.discard(rig.keeper.index.get(toks(N)))
    seq.num_cached_tokens = N
    with pytest.raises(RuntimeError, match="changed between scheduling and restore"):  # dropped meanwhile
        rig.keeper.restore_into(seq)


def test_forget_drops_the_requests_chain_and_candidate(tmp_path):
    rig = Rig(tmp_path)
    rig.keep("a", toks(N))
    seq = Sequence("r", toks(N) + [5], None)
    assert rig.keeper.restorable(seq) == N
    chain = rig.keeper.chains["r"]
    seq.append_token(6)
    assert rig.keeper.restorable(seq) == N and rig.keeper.chains["r"] is chain  # one chain, grown
    assert list(chain.tokens) == seq.token_ids
    rig.keeper.forget("r")
    rig.keeper.forget("never-seen")
    assert "r" not in rig.keeper.chains and "r" not in rig.keeper.candidates
    seq.num_cached_tokens = N
    with pytest.raises(RuntimeError):
        rig.keeper.restore_into(seq)


def test_the_disk_tier_writes_named_files_in_its_directory_and_deletes_dropped_ones(tmp_path):
    disk_dir = tmp_path / "a" / "b"  # created with its parents
    one = Rig(device=0, host=0, disk=Rig().keeper.nbytes(N), disk_dir=disk_dir)
    first = one.keep("a", toks(N))
    files = sorted(disk_dir.iterdir())
    assert [f.name for f in files] == [f"snap-{one.keeper._run}-0.pt"] and one.keeper.index.get(toks(N)).handle == \
        str(files[0])
    assert restored_exactly(one, first, toks(N))
    second = one.keep("b", toks(N, 50))  # the disk tier holds one: the first snapshot's file goes
    assert [f.name for f in disk_dir.iterdir()] == [f"snap-{one.keeper._run}-1.pt"] and one.tier(toks(N)) is None
    (disk_dir / f"snap-{one.keeper._run}-1.pt").unlink()  # a file someone deleted: dropping it still works
    one.keep("c", toks(N, 70))
    assert one.tier(toks(N, 50)) is None and one.tier(toks(N, 70)) == "disk"
    second = one.keep("b", toks(N, 50))
    other = Rig(device=0, host=0, disk=BIG, disk_dir=disk_dir)  # another run sharing the directory
    other.keep("c", toks(N, 50))
    assert len(list(disk_dir.iterdir())) == 2 and other.keeper._run != one.keeper._run
    assert restored_exactly(one, second, toks(N, 50))


def test_disk_tier_only_when_it_has_bytes_and_a_temporary_directory_by_default(tmp_path):
    rig = Rig(device=0, host=0, disk=BIG)
    assert [t.name for t in rig.keeper.index.tiers] == ["device", "host", "disk"]
    plain = SnapshotKeeper(rig.cache, rig.blocks, BIG, BIG)  # no disk arguments: no disk tier
    assert [t.name for t in plain.index.tiers] == ["device", "host"]
    assert rig.keeper.disk_dir.is_dir() and rig.keeper.disk_dir.name.startswith("m1-states-")
    assert [t.name for t in Rig(device=0, host=0, disk=1).keeper.index.tiers] == ["device", "host", "disk"]
    none = Rig(tmp_path, device=0, host=BIG, disk=0)
    assert [t.name for t in none.keeper.index.tiers] == ["device", "host"] and not hasattr(none.keeper, "disk_dir")
    tight = Rig(tmp_path, device=0, host=0)  # no disk tier: past the host it is dropped
    tight.keep("a", toks(N))
    assert tight.tier(toks(N)) is None and tight.blocks.num_free == 40


def shared_dir(tmp_path) -> SharedStates:
    return SharedStates(tmp_path / "shared", {"model": "tiny", "dtype": "bf16"}, KEY_BLOCK_TOKENS)


@pytest.mark.parametrize("on_device, length", [(True, N), (False, N), (True, KEY_BLOCK_TOKENS + 5)])
def test_another_replica_restores_what_one_saved_to_the_shared_directory(tmp_path, on_device, length):
    one = Rig(tmp_path, shared=shared_dir(tmp_path), num_blocks=160)
    expected = one.keep("a", toks(length), on_device=on_device)
    assert one.keeper.shared.saved == 1 and len(list((tmp_path / "shared").glob("*.pt"))) == 1
    other = Rig(tmp_path, shared=shared_dir(tmp_path), num_blocks=160)
    other.keep("b", toks(length - 3))  # a shorter local snapshot: the longer shared one wins
    assert restored_exactly(other, expected, toks(length))
    assert other.keeper.shared.restored == 1 and other.keeper.index.stats()["hits"] == 0  # not a local use


def test_a_shared_snapshot_no_longer_than_the_local_one_is_not_loaded(tmp_path):
    one = Rig(tmp_path, shared=shared_dir(tmp_path))
    expected = one.keep("a", toks(N))
    assert restored_exactly(one, expected, toks(N))  # the local device copy, found in the shared dir as well
    assert one.keeper.shared.restored == 0 and one.keeper.index.stats()["hits"] == 1


def test_a_shared_snapshot_always_leaves_a_token_to_prefill(tmp_path):
    one = Rig(tmp_path, shared=shared_dir(tmp_path))
    one.keep("a", toks(N))
    other = Rig(tmp_path, shared=shared_dir(tmp_path))
    assert other.keeper.restorable(Sequence("all", toks(N), None)) == 0  # it would cover every token
    assert other.keeper.restorable(Sequence("one-more", toks(N + 1), None)) == N
    assert isinstance(other.keeper.candidates["one-more"], SharedHit)


class Planted:
    """Unpickling this touches a file: what a snapshot file planted in the disk directory could run."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_disk_snapshot_file_is_loaded_as_tensors_only(tmp_path):
    rig = Rig(tmp_path, device=0, host=0, disk=BIG)
    rig.keep("a", toks(N))
    marker = tmp_path / "ran"
    torch.save({"states": Planted(marker), "keys": {}, "values": {}}, rig.keeper.index.get(toks(N)).handle)
    with pytest.raises(pickle.UnpicklingError):
        rig.admit("next", toks(N) + [1])
    assert not marker.exists()
