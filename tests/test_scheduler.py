"""Scheduler: chunked prefill interleaved with decodes, token budget, preemption, abort, stop rules, restore hook.

The "model" here is a pure function of a sequence's tokens, so a preempted-and-recomputed sequence must produce
exactly the tokens it produces when run alone.
"""
import random
from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from engine.serving.block_manager import CacheManager
from engine.serving.scheduler import LENGTH_EXCEEDED, Scheduler
from engine.serving.sequence import Sequence, SequenceStatus
from test_block_manager import import_without_package_init

EOS = 0


@dataclass
class Params:
    max_tokens: int | None = 4
    ignore_eos: bool = False
    stop_token_ids: tuple = ()


def next_token(seq: Sequence) -> int:
    """Deterministic stand-in for the model: never EOS, depends only on the tokens so far."""
    return 100 + (sum(seq.token_ids) * 31 + seq.num_tokens) % 900


def make_seq(request_id: str, num_prompt_tokens: int, **params) -> Sequence:
    return Sequence(request_id, [(7 * i + len(request_id)) % 50 + 1 for i in range(num_prompt_tokens)],
                    Params(**params))


def make_scheduler(num_blocks=64, block_size=4, num_slots=8, max_num_seqs=8, max_num_batched_tokens=32,
                   prefill_chunk_size=8, **kwargs) -> Scheduler:
    cache = CacheManager(num_blocks, block_size, num_slots)
    return Scheduler(max_num_seqs, max_num_batched_tokens, prefill_chunk_size, cache, eos_token_ids=[EOS], **kwargs)


def check_invariants(sched: Scheduler) -> None:
    cache = sched.cache
    held = [b for s in sched.running for b in s.block_table]
    outside = len(sched.block_holder.held) if hasattr(sched, "block_holder") else 0
    assert len(held) == len(set(held)) and len(held) + cache.blocks.num_free + outside == cache.num_blocks
    assert len(sched.running) + cache.slots.num_free == cache.slots.num_slots
    assert len(sched.running) <= sched.max_num_seqs
    assert all(s.state_slot is None and not s.block_table for s in sched.waiting)


def step(sched: Scheduler, model=next_token):
    """One engine step; returns (decode ids, [(id, start, n)] of prefills, output, finished)."""
    out = sched.schedule()
    check_invariants(sched)
    assert out.num_batched_tokens <= sched.max_num_batched_tokens
    for seq, n in out.scheduled:
        assert seq.status is SequenceStatus.RUNNING and seq.state_slot is not None
        assert 1 <= n <= sched.prefill_chunk_size
        assert len(seq.block_table) * sched.cache.block_size >= seq.num_computed_tokens + n
    scheduled = {s.request_id for s, _ in out.scheduled}
    assert all(s.request_id in scheduled for s in sched.running if s.num_uncomputed_tokens == 1)
    decodes = [s.request_id for s in out.decodes]
    prefills = [(s.request_id, s.num_computed_tokens, n) for s, n in out.prefills]
    finished = sched.postprocess(out, {s.request_id: model(s) for s in out.sample_seqs})
    check_invariants(sched)
    return decodes, prefills, out, finished


def run_to_completion(sched: Scheduler, model=next_token, max_steps=5000) -> dict[str, Sequence]:
    done = {}
    for _ in range(max_steps):
        if not sched.has_unfinished:
            return done
        done.update((s.request_id, s) for s in step(sched, model)[3])
    raise AssertionError(f"not finished after {max_steps} steps: {sched.running} {list(sched.waiting)}")


def solo_completion(seq: Sequence) -> list[int]:
    sched = make_scheduler(num_blocks=1024)
    alone = Sequence(seq.request_id, seq.token_ids[:seq.num_prompt_tokens], seq.sampling_params)
    sched.add(alone)
    return run_to_completion(sched)[seq.request_id].completion_token_ids


def test_scheduler_imports_without_torch():
    result = import_without_package_init("engine.serving.scheduler")
    assert result.returncode == 0, result.stderr


def test_chunked_prefill_interleaves_with_decodes():
    sched = make_scheduler(max_num_batched_tokens=8, prefill_chunk_size=4)
    sched.add(make_seq("A", 2, max_tokens=10))
    assert step(sched)[:2] == ([], [("A", 0, 2)])
    sched.add(make_seq("B", 10))
    expected = [(["A"], [("B", 0, 4)]), (["A"], [("B", 4, 4)]), (["A"], [("B", 8, 2)]), (["A", "B"], [])]
    for decodes, prefills in expected:
        assert step(sched)[:2] == (decodes, prefills)
    assert sched.requests["B"].num_completion_tokens == 2


def test_budget_is_filled_with_chunks_of_several_prompts():
    sched = make_scheduler(max_num_batched_tokens=8, prefill_chunk_size=4)
    for name in "ABC":
        sched.add(make_seq(name, 6))
    assert step(sched)[:2] == ([], [("A", 0, 4), ("B", 0, 4)])
    assert step(sched)[:2] == ([], [("A", 4, 2), ("B", 4, 2), ("C", 0, 4)])
    assert step(sched)[:2] == (["A", "B"], [("C", 4, 2)])


def test_million_token_prompt_is_read_in_chunks_between_decodes():
    chunk, length = 65_536, 1 << 20
    sched = make_scheduler(num_blocks=length // 256 + 16, block_size=256, max_num_batched_tokens=70_000,
                           prefill_chunk_size=chunk)
    sched.add(make_seq("A", 3, max_tokens=100))
    sched.add(make_seq("B", 3, max_tokens=100))
    step(sched)
    sched.add(Sequence("long", [1] * length, Params(max_tokens=2)))
    for k in range(length // chunk):
        decodes, prefills, out, _ = step(sched)
        assert (decodes, prefills) == (["A", "B"], [("long", k * chunk, chunk)])
    assert step(sched)[:2] == (["A", "B", "long"], [])


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_token_budget_and_seq_limit_hold_under_load(seed):
    rng = random.Random(seed)
    sched = make_scheduler(num_blocks=256, max_num_seqs=5, max_num_batched_tokens=12, prefill_chunk_size=5)
    seqs = [make_seq(f"s{i}", rng.randint(1, 30), max_tokens=rng.randint(1, 8)) for i in range(12)]
    for seq in seqs:
        sched.add(seq)
    done = run_to_completion(sched)
    assert sorted(done) == sorted(s.request_id for s in seqs) and sched.cache.is_full


def test_newest_running_sequence_is_preempted_to_front_of_waiting():
    released = []
    sched = make_scheduler(num_blocks=4, num_slots=3, max_num_seqs=2, max_num_batched_tokens=16,
                           on_release=lambda s: released.append((s.request_id, s.status, s.num_computed_tokens,
                                                                 len(s.block_table))))
    for name, n in [("A", 7), ("B", 7), ("C", 3)]:
        sched.add(make_seq(name, n, max_tokens=10))
    assert step(sched)[:2] == ([], [("A", 0, 7), ("B", 0, 7)])
    assert step(sched)[:2] == (["A", "B"], [])
    decodes, prefills, out, _ = step(sched)
    B = out.preempted[0]
    assert (decodes, prefills, B.request_id) == (["A"], [], "B")
    assert released == [("B", SequenceStatus.WAITING, 8, 2)]
    assert (B.num_computed_tokens, B.block_table, B.state_slot, B.num_completion_tokens) == (0, [], None, 2)
    assert [s.request_id for s in sched.waiting] == ["B", "C"] and sched.num_preemptions == 1


@pytest.mark.parametrize("num_blocks,num_slots", [(6, 3), (4, 4), (16, 1)])
def test_tiny_pools_preempt_then_complete_with_solo_outputs(num_blocks, num_slots):
    sched = make_scheduler(num_blocks=num_blocks, num_slots=num_slots, max_num_batched_tokens=16)
    seqs = [make_seq(f"s{i}", 6, max_tokens=8) for i in range(3)]
    for seq in seqs:
        sched.add(seq)
    done = run_to_completion(sched)
    for seq in seqs:
        assert done[seq.request_id].finish_reason == "length"
        assert seq.completion_token_ids == solo_completion(seq)
    assert sched.cache.is_full
    assert sched.num_preemptions > 0 or num_slots == 1


def test_prefill_chunks_end_at_the_prompt_end():
    restored = {"restored": 4}
    sched = make_scheduler(prefill_chunk_size=8, restore=lambda s: restored.get(s.request_id, 0))
    for name in ["recompute", "restored"]:
        seq = make_seq(name, 6, max_tokens=10)
        seq.token_ids += [101, 102, 103]
        sched.add(seq)
    assert step(sched)[:2] == ([], [("recompute", 0, 6), ("restored", 4, 2)])
    assert step(sched)[:2] == ([], [("recompute", 6, 3), ("restored", 6, 3)])
    assert step(sched)[:2] == (["recompute", "restored"], [])


class BlockHolder:
    """Stands in for snapshots that keep KV blocks referenced outside running sequences."""

    def __init__(self, sched: Scheduler, num_blocks: int):
        self.blocks, self.held, self.calls = sched.cache.blocks, sched.cache.blocks.allocate(num_blocks), []
        sched.block_holder = self

    def reclaim(self, num_blocks: int) -> int:
        self.calls.append(num_blocks)
        freed, self.held = self.held[:num_blocks], self.held[num_blocks:]
        self.blocks.free(freed)
        return len(freed)


@pytest.mark.parametrize("prompt_len,left_held", [(12, 0), (3, 2)])
def test_reclaim_frees_only_missing_held_blocks(prompt_len, left_held):
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=16, prefill_chunk_size=4)
    holder = BlockHolder(sched, 3)
    sched.reclaim = holder.reclaim
    sched.add(make_seq("s", prompt_len, max_tokens=4))
    done = run_to_completion(sched)
    assert done["s"].finish_reason == "length" and len(holder.held) == left_held and holder.calls
    assert sched.num_preemptions == 0 and sched.cache.blocks.num_free == 4 - left_held


def test_restore_is_asked_again_after_reclaim_and_reclaim_waits_after_a_restore():
    snapshots = {"dropped": 8, "kept": 4}
    sched = make_scheduler(num_blocks=6, max_num_batched_tokens=16, prefill_chunk_size=8,
                           restore=lambda s: snapshots.get(s.request_id, 0))
    holder = BlockHolder(sched, 5)
    sched.reclaim = lambda n: snapshots.pop("dropped", None) and holder.reclaim(n)
    sched.add(make_seq("dropped", 10))
    assert step(sched)[1] == [("dropped", 0, 8)], "its snapshot went in the reclaim: recompute from 0"
    sched.add(make_seq("kept", 6))
    sched.add(make_seq("next", 4))
    calls = len(holder.calls)
    sched.reclaim = holder.reclaim
    assert step(sched)[1] == [("dropped", 8, 2), ("kept", 4, 2)]
    assert len(holder.calls) == calls + 1, "one reclaim for 'kept'; none for 'next' after a restore this step"
    assert ("next", 0, 4) in step(sched)[1] and len(holder.calls) == calls + 2


def test_without_reclaim_held_blocks_make_a_lone_sequence_fail():
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=16, prefill_chunk_size=4)
    holder = BlockHolder(sched, 3)
    seq = make_seq("s", 12, max_tokens=4)
    sched.add(seq)
    out = sched.schedule()
    assert out.prefills == [(seq, 4)]
    sched.postprocess(out, {})
    assert [s.finish_reason for s in sched.schedule().finished] == [LENGTH_EXCEEDED]
    assert sched.cache.blocks.num_free == 1 and len(holder.held) == 3


def test_a_reclaim_given_at_construction_that_frees_nothing_is_not_asked_forever():
    calls = []

    def reclaim(num_blocks: int) -> int:
        calls.append(num_blocks)
        assert len(calls) < 20, "a reclaim that freed nothing is asked again and again"
        return 0

    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=16, prefill_chunk_size=4, reclaim=reclaim)
    BlockHolder(sched, 3)
    sched.add(make_seq("s", 12, max_tokens=4))
    sched.postprocess(sched.schedule(), {})
    assert [s.finish_reason for s in sched.schedule().finished] == [LENGTH_EXCEEDED]
    assert calls and sched.cache.blocks.num_free == 1


def test_the_last_token_of_the_budget_goes_to_a_running_prefill():
    sched = make_scheduler(max_num_batched_tokens=17, prefill_chunk_size=8)
    for request_id in "ABC":
        sched.add(make_seq(request_id, 40))
    assert step(sched)[1] == [("A", 0, 8), ("B", 0, 8), ("C", 0, 1)]
    assert step(sched)[1] == [("A", 8, 8), ("B", 8, 8), ("C", 1, 1)]


def test_a_running_prefill_reclaims_every_block_its_whole_chunk_needs():
    sched = make_scheduler(num_blocks=6, max_num_batched_tokens=16, prefill_chunk_size=8)
    holder = BlockHolder(sched, 4)
    sched.reclaim = holder.reclaim
    sched.add(make_seq("s", 24))
    assert step(sched)[1] == [("s", 0, 8)]
    assert step(sched)[1] == [("s", 8, 8)] and holder.calls == [2]


def test_a_running_prefill_uses_the_last_free_token_row_before_giving_up():
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=16, prefill_chunk_size=7)
    BlockHolder(sched, 2)
    sched.add(make_seq("s", 10))
    assert step(sched)[1] == [("s", 0, 7)]
    assert step(sched)[1] == [("s", 7, 1)], "one row is left in its second block: a 1-token chunk, no give-up"


def test_restore_is_not_asked_once_the_budget_is_spent():
    calls = []
    sched = make_scheduler(max_num_batched_tokens=8, restore=lambda s: calls.append(s.request_id) or 0)
    sched.add(make_seq("A", 20))
    sched.add(make_seq("B", 4))
    assert step(sched)[1] == [("A", 0, 8)] and calls == ["A"]


def test_a_restored_admission_is_cut_to_the_free_rows_after_its_prefix():
    sched = make_scheduler(num_blocks=6, max_num_batched_tokens=16, prefill_chunk_size=16, restore=lambda s: 8)
    BlockHolder(sched, 2)
    sched.add(make_seq("R", 20))
    assert step(sched)[1] == [("R", 8, 8)]


def test_prompt_larger_than_the_whole_pool_finishes_length_exceeded():
    sched = make_scheduler(num_blocks=2)
    sched.add(make_seq("huge", 9))
    sched.add(make_seq("ok", 3, max_tokens=2))
    decodes, prefills, out, finished = step(sched)
    assert [s.request_id for s in out.finished] == ["huge"] and prefills == [("ok", 0, 3)]
    assert finished[0].finish_reason == LENGTH_EXCEEDED and finished[0].status is SequenceStatus.FINISHED
    assert run_to_completion(sched)["ok"].finish_reason == "length" and sched.cache.is_full


def test_lone_sequence_that_outgrows_the_pool_finishes_length_exceeded():
    sched = make_scheduler(num_blocks=2)
    seq = make_seq("edge", 8, max_tokens=5)
    sched.add(seq)
    done = run_to_completion(sched)
    assert done["edge"].finish_reason == LENGTH_EXCEEDED and seq.num_completion_tokens == 1
    assert sched.cache.is_full


def test_abort_frees_everything_at_once():
    released = []
    sched = make_scheduler(num_blocks=32, max_num_seqs=2, max_num_batched_tokens=10, prefill_chunk_size=4,
                           on_release=lambda s: released.append((s.request_id, s.status)))
    sched.add(make_seq("decoding", 2, max_tokens=50))
    step(sched)
    sched.add(make_seq("prefilling", 40))
    sched.add(make_seq("waiting", 5))
    step(sched)
    assert sched.requests["prefilling"].block_table and sched.requests["waiting"].status is SequenceStatus.WAITING
    for request_id in ["prefilling", "waiting", "decoding"]:
        seq = sched.abort(request_id)
        assert (seq.status, seq.finish_reason) == (SequenceStatus.ABORTED, "abort")
        assert seq.block_table == [] and seq.state_slot is None
    assert released == [("prefilling", SequenceStatus.ABORTED), ("decoding", SequenceStatus.ABORTED)]
    assert sched.abort("decoding") is None and sched.abort("unknown") is None
    assert sched.cache.is_full and not sched.has_unfinished and sched.schedule().is_empty


@pytest.mark.parametrize("seed", [0, 7, 42])
def test_random_adds_steps_and_aborts_keep_outputs_and_free_pools(seed):
    rng = random.Random(seed)
    sched = make_scheduler(num_blocks=12, num_slots=3, max_num_seqs=3, max_num_batched_tokens=10,
                           prefill_chunk_size=4)
    seqs, aborted, done = [], set(), {}
    for i in range(200):
        if rng.random() < 0.2:
            seqs.append(make_seq(f"s{i}", rng.randint(1, 30), max_tokens=rng.randint(1, 10)))
            sched.add(seqs[-1])
        if seqs and rng.random() < 0.05:
            victim = rng.choice(seqs).request_id
            if sched.abort(victim) is not None:
                aborted.add(victim)
        done.update((s.request_id, s) for s in step(sched)[3])
    done.update(run_to_completion(sched))
    assert sched.cache.is_full and sched.num_preemptions > 0
    assert set(done) | aborted == {s.request_id for s in seqs}
    for seq in done.values():
        assert seq.completion_token_ids == solo_completion(seq)


def scripted(script: list[int]):
    return lambda seq: script[seq.num_completion_tokens]


@pytest.mark.parametrize("params,completion,reason", [
    (Params(max_tokens=10), [5, 6, EOS], "stop"),
    (Params(max_tokens=4, ignore_eos=True), [5, 6, EOS, 7], "length"),
    (Params(max_tokens=10, stop_token_ids=(6,)), [5, 6], "stop"),
    (Params(max_tokens=1), [5], "length"),
    (Params(max_tokens=None, ignore_eos=True, stop_token_ids=(9,)), [5, 6, EOS, 7, 8, 9], "stop"),
    (SimpleNamespace(), [5, 6, EOS], "stop"),
], ids=["eos", "ignore_eos", "stop_id", "max_tokens_1", "no_limit", "bare_params_stop_at_eos"])
def test_stop_rules(params, completion, reason):
    sched = make_scheduler()
    sched.add(Sequence("r", [1, 2, 3], params))
    done = run_to_completion(sched, scripted([5, 6, EOS, 7, 8, 9, 10]))
    assert (done["r"].completion_token_ids, done["r"].finish_reason) == (completion, reason)
    assert sched.cache.is_full


def test_restore_skips_restored_prefix_and_reserves_its_blocks():
    calls = []
    restored = {"R": 9, "regen": 11}
    sched = make_scheduler(prefill_chunk_size=8,
                           restore=lambda s: calls.append(s.request_id) or restored.get(s.request_id, 0))
    sched.add(make_seq("R", 12))
    sched.add(make_seq("regen", 12))
    sched.add(make_seq("fresh", 3))
    decodes, prefills, out, _ = step(sched)
    assert prefills == [("R", 9, 3), ("regen", 11, 1), ("fresh", 0, 3)]
    assert [s.request_id for s in out.restored] == ["R", "regen"] and calls == ["R", "regen", "fresh"]
    R = sched.requests["R"]
    assert (R.num_cached_tokens, R.num_computed_tokens, len(R.block_table), R.num_completion_tokens) == (9, 12, 3, 1)


def test_restore_is_asked_again_after_preemption():
    calls = []
    sched = make_scheduler(num_blocks=4, max_num_batched_tokens=16,
                           restore=lambda s: calls.append(s.request_id) or 0)
    for name in "AB":
        sched.add(make_seq(name, 7, max_tokens=6))
    run_to_completion(sched)
    assert sched.num_preemptions > 0 and calls.count("B") == 1 + sched.num_preemptions


def test_bad_restore_length_is_rejected():
    sched = make_scheduler(restore=lambda s: s.num_tokens)
    sched.add(make_seq("bad", 5))
    with pytest.raises(ValueError, match=r"restore\('bad'\) returned 5; must be in \[0, 4\]"):
        sched.schedule()


def test_invalid_configuration_and_inputs():
    cache = CacheManager(8, 4, 2)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        Scheduler(max_num_seqs=8, max_num_batched_tokens=4, prefill_chunk_size=4, cache=cache)
    with pytest.raises(ValueError, match="prefill_chunk_size must be >= 1"):
        Scheduler(1, 4, 0, cache)
    sched = Scheduler(2, 8, 4, cache)
    sched.add(make_seq("dup", 3))
    with pytest.raises(ValueError, match="'dup' is already scheduled"):
        sched.add(make_seq("dup", 3))
    out = sched.schedule()
    with pytest.raises(ValueError, match="no sampled token for request 'dup'"):
        sched.postprocess(out, {})
    for name, args in [("max_num_seqs", (0, 4, 4)), ("max_num_batched_tokens", (1, 0, 4))]:
        with pytest.raises(ValueError, match=f"^{name} must be >= 1, got 0$"):
            Scheduler(*args, cache)


@pytest.mark.parametrize("held", ["slot", "blocks", "status"])
def test_add_refuses_a_sequence_holding_a_slot_blocks_or_not_waiting(held):
    sched, seq = make_scheduler(), make_seq("busy", 3)
    if held == "slot":
        seq.state_slot = 0
    elif held == "blocks":
        seq.block_table = [0]
    else:
        seq.status = SequenceStatus.RUNNING
    with pytest.raises(ValueError, match="'busy' must be WAITING and hold no blocks or slot"):
        sched.add(seq)


def test_aborting_one_request_mid_step_still_advances_the_others():
    sched = make_scheduler()
    sched.add(make_seq("a", 3))
    sched.add(make_seq("b", 3))
    out = sched.schedule()
    assert [seq.request_id for seq, _ in out.scheduled] == ["a", "b"]
    sched.abort("a")
    assert sched.postprocess(out, {"b": 5}) == [] and sched.requests["b"].completion_token_ids == [5]
