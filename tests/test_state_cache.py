"""StateCache: longest-prefix matching, LRU demotion across tiers, pinning, drops, and the scheduler restore flow.

Handles are strings ("gpu:a"); the fake mover records every call and returns the handle re-labelled for its tier.
"""
import random

import pytest

import engine.serving.state_cache as state_cache
from engine.serving.block_manager import CacheManager
from engine.serving.scheduler import Scheduler
from engine.serving.sequence import Sequence
from engine.serving.state_cache import StateCache
from test_block_manager import import_without_package_init


class Mover:
    def __init__(self):
        self.calls = []

    def __call__(self, entry, from_tier, to_tier):
        self.calls.append((entry.handle, from_tier, to_tier))
        return None if to_tier is None else f"{to_tier}:{entry.handle.split(':')[1]}"


def make_cache(budgets=(1000, 1000, 1000), block_tokens=4) -> StateCache:
    return StateCache(list(zip(["gpu", "host", "disk"], budgets)), Mover(), block_tokens=block_tokens)


def toks(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def where(cache: StateCache) -> dict[str, list[str]]:
    """Handle names per tier, least recently used first."""
    return {t.name: [e.handle.split(":")[1] for e in t.lru] for t in cache.tiers}


def test_state_cache_imports_without_torch():
    result = import_without_package_init("engine.serving.state_cache")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("block_tokens", [1, 3, 4, 256])
@pytest.mark.parametrize("query,matched", [
    (toks(10), 0),
    (toks(11), 10),
    (toks(10) + [99], 10),
    (toks(15), 10),
    (toks(6) + [99] + toks(8, 7), 0),
    (toks(7), 0),
    ([5] + toks(14, 1), 0),
], ids=["exact", "plus_one", "plus_other", "extension", "divergent", "shorter", "first_differs"])
def test_lookup_of_one_kept_sequence(block_tokens, query, matched):
    cache = make_cache(block_tokens=block_tokens)
    entry = cache.put(toks(10), "gpu:a", 10)
    assert cache.lookup(query) == ((entry, 10) if matched else (None, 0))


@pytest.mark.parametrize("block_tokens", [1, 4, 256])
def test_lookup_prefers_the_longest_and_leaves_one_token(block_tokens):
    cache = make_cache(block_tokens=block_tokens)
    prompt_end = cache.put(toks(6), "gpu:p", 1)
    answer_end = cache.put(toks(8), "gpu:e", 1)
    cache.put(toks(6) + [99, 98], "gpu:x", 1)
    assert cache.lookup(toks(20)) == (answer_end, 8)
    assert cache.lookup(toks(8)) == (prompt_end, 6), "regenerate: the 8-token entry would leave nothing to prefill"
    assert cache.lookup(toks(6) + [50, 51]) == (prompt_end, 6), "edited answer falls back to the prompt end"
    assert cache.lookup(toks(8), max_len=8) == (answer_end, 8)


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_lookup_agrees_with_brute_force(seed):
    rng = random.Random(seed)
    cache = make_cache(budgets=(10**9, 0, 0), block_tokens=4)
    kept = []
    for i in range(60):
        base = rng.choice(kept) if kept and rng.random() < 0.7 else []
        tokens = base[:rng.randint(0, len(base))] + [rng.randint(1, 3) for _ in range(rng.randint(1, 12))]
        cache.put(tokens, f"gpu:{i}", 1)
        kept = [k for k in kept if k != tokens] + [tokens]
    for _ in range(300):
        base = rng.choice(kept)
        query = base[:rng.randint(0, len(base))] + [rng.randint(1, 3) for _ in range(rng.randint(0, 10))]
        expected = max((len(k) for k in kept if len(k) < len(query) and query[:len(k)] == k), default=0)
        entry, matched = cache.lookup(query)
        assert matched == expected and (entry is None or list(entry.token_ids) == query[:matched])


def test_lookup_hashes_only_up_to_the_first_unshared_block(monkeypatch):
    cache = make_cache(block_tokens=100)
    kept = cache.put(toks(1000), "gpu:a", 1)
    count = []
    real = state_cache._next_hash
    monkeypatch.setattr(state_cache, "_next_hash", lambda prev, block: count.append(1) or real(prev, block))
    assert cache.lookup([7] * 1_000_000) == (None, 0) and len(count) == 1
    count.clear()
    assert cache.lookup(toks(1_000_000)) == (kept, 1000) and len(count) == 11


def test_get_and_contains_are_exact():
    cache = make_cache()
    entry = cache.put(toks(9), "gpu:a", 1)
    assert cache.get(toks(9)) is entry and toks(9) in cache
    assert cache.get(toks(8)) is None and toks(10) not in cache and [] not in cache


def test_match_counts_stats_and_touches_but_lookup_does_not():
    cache = make_cache(budgets=(100, 100, 100))
    a = cache.put(toks(5), "gpu:a", 40)
    cache.put(toks(5, 100), "gpu:b", 40)
    cache.lookup(toks(9))
    assert where(cache)["gpu"] == ["a", "b"] and cache.stats()["hits"] == 0
    assert cache.match(toks(9)) == (a, 5) and cache.match([1, 2, 3]) == (None, 0)
    assert where(cache)["gpu"] == ["b", "a"]
    assert cache.stats() == {"hits": 1, "misses": 1, "reused_tokens": 5, "num_entries": 2, "num_demoted": 0,
                             "num_dropped": 0, "bytes": {"gpu": 80, "host": 0, "disk": 0}}


def test_lru_demotion_across_tiers_then_drop_from_last():
    cache = make_cache(budgets=(100, 100, 50))
    entries = {name: cache.put(toks(5, 10 * i), f"gpu:{name}", 40) for i, name in enumerate("abc")}
    assert where(cache) == {"gpu": ["b", "c"], "host": ["a"], "disk": []}
    assert cache.mover.calls == [("gpu:a", "gpu", "host")] and entries["a"].handle == "host:a"
    cache.touch(entries["b"])
    cache.put(toks(5, 30), "gpu:d", 40)
    assert where(cache) == {"gpu": ["b", "d"], "host": ["a", "c"], "disk": []}
    cache.put(toks(5, 40), "gpu:e", 40)
    assert where(cache) == {"gpu": ["d", "e"], "host": ["c", "b"], "disk": ["a"]}
    cache.put(toks(5, 50), "gpu:f", 40)
    assert where(cache) == {"gpu": ["e", "f"], "host": ["b", "d"], "disk": ["c"]}
    assert cache.mover.calls[1:] == [("gpu:c", "gpu", "host"), ("gpu:b", "gpu", "host"), ("host:a", "host", "disk"),
                                     ("gpu:d", "gpu", "host"), ("host:c", "host", "disk"), ("disk:a", "disk", None)]
    assert entries["a"].tier is None and entries["a"].handle is None
    assert cache.lookup(toks(9)) == (None, 0) and cache.lookup(toks(9, 20))[1] == 5
    assert cache.stats()["bytes"] == {"gpu": 80, "host": 80, "disk": 40}
    assert cache.stats()["num_dropped"] == 1 and len(cache) == 5
    with pytest.raises(ValueError, match="no longer kept"):
        cache.touch(entries["a"])


def test_pinned_entries_are_never_moved():
    cache = make_cache(budgets=(100, 0, 0))
    a = cache.put(toks(5), "gpu:a", 60)
    cache.pin(a)
    cache.pin(a)
    b = cache.put(toks(5, 10), "gpu:b", 60)
    assert a.tier == "gpu" and b.tier is None, "the unpinned newer entry leaves instead of the pinned LRU one"
    assert cache.mover.calls == [("gpu:b", "gpu", "host"), ("host:b", "host", "disk"), ("disk:b", "disk", None)]
    c = cache.put(toks(5, 20), "gpu:c", 40)
    cache.unpin(a)
    assert where(cache)["gpu"] == ["a", "c"], "still pinned once"
    cache.unpin(a)
    d = cache.put(toks(5, 30), "gpu:d", 40)
    assert a.tier is None and where(cache)["gpu"] == ["c", "d"], "unpinned, the LRU entry leaves"
    with pytest.raises(ValueError, match="not pinned"):
        cache.unpin(d)
    cache.pin(d)
    with pytest.raises(ValueError, match="pinned"):
        cache.discard(d)


def test_oversized_entry_moves_down_without_flushing_others():
    cache = make_cache(budgets=(100, 1000, 10))
    cache.put(toks(5), "gpu:a", 40)
    big = cache.put(toks(5, 10), "gpu:big", 150)
    assert where(cache) == {"gpu": ["a"], "host": ["big"], "disk": []} and big.handle == "host:big"
    huge = cache.put(toks(5, 20), "gpu:huge", 5000)
    assert huge.tier is None and cache.mover.calls[-3:] == [
        ("gpu:huge", "gpu", "host"), ("host:huge", "host", "disk"), ("disk:huge", "disk", None)]


def test_put_replaces_same_tokens_and_discard_drops():
    cache = make_cache()
    old = cache.put(toks(5), "gpu:old", 10)
    new = cache.put(toks(5), "gpu:new", 10)
    assert cache.mover.calls == [("gpu:old", "gpu", None)] and cache.get(toks(5)) is new and len(cache) == 1
    assert old.tier is None and cache.stats()["bytes"]["gpu"] == 10
    cache.pin(new)
    with pytest.raises(ValueError, match="pinned snapshot"):
        cache.put(toks(5), "gpu:newer", 10)
    cache.unpin(new)
    cache.discard(new)
    assert len(cache) == 0 and cache.stats()["bytes"]["gpu"] == 0 and cache.lookup(toks(9)) == (None, 0)


def test_demote_lru_on_demand():
    cache = make_cache()
    a = cache.put(toks(5), "gpu:a", 10)
    b = cache.put(toks(5, 10), "gpu:b", 10)
    cache.pin(a)
    assert cache.demote_lru("gpu") is b and b.handle == "host:b"
    assert cache.demote_lru("gpu") is None, "only the pinned entry is left"
    assert cache.demote_lru("disk") is None
    cache.demote_lru("host")
    assert cache.demote_lru("disk") is b and b.tier is None and cache.mover.calls[-1] == ("disk:b", "disk", None)
    with pytest.raises(ValueError, match="unknown tier 'vram'"):
        cache.demote_lru("vram")


def test_invalid_arguments_are_named():
    with pytest.raises(ValueError, match="uniquely named"):
        StateCache([("gpu", 1), ("gpu", 2)], Mover())
    with pytest.raises(ValueError, match="tier 'host' has a negative"):
        StateCache([("gpu", 1), ("host", -1)], Mover())
    with pytest.raises(ValueError, match="^put: token_ids is empty; a snapshot must cover at least one token$"):
        make_cache().put([], "gpu:a", 1)
    with pytest.raises(ValueError, match="^block_tokens must be >= 1, got 0$"):
        make_cache(block_tokens=0)
    with pytest.raises(ValueError, match="^put: nbytes must be >= 0, got -1$"):
        make_cache().put([1], "gpu:a", -1)
    assert make_cache().put([1], "gpu:a", 0).nbytes == 0, "a zero-byte snapshot is allowed"


def test_stats_accumulate_over_matches_demotions_and_drops():
    cache = make_cache(budgets=(100, 100, 50))
    for i, name in enumerate("abcdefg"):
        cache.put(toks(5, 10 * i), f"gpu:{name}", 40)
    e = cache.get(toks(5, 50))
    assert e.tier == "gpu"
    assert cache.match(toks(9, 50)) == (e, 5) and cache.match(toks(7, 50)) == (e, 5)
    assert cache.match([1, 2, 3]) == (None, 0) and cache.match([2, 3]) == (None, 0)
    assert cache.match(toks(5, 50), max_len=5) == (e, 5), "match passes max_len on: the whole query may match"
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["reused_tokens"]) == (3, 2, 15)
    assert (stats["num_demoted"], stats["num_dropped"]) == (len(cache.mover.calls) - 2, 2) == (8, 2)


def test_scheduler_restores_from_kept_turns():
    """The runner contract: snapshot at prompt end and at release; `restore` is a pure `lookup`."""
    kept = make_cache(block_tokens=4)

    def snapshot_finished(seq):
        if seq.status.name == "FINISHED":
            kept.put(seq.token_ids[:seq.num_computed_tokens], f"gpu:{seq.request_id}-end", 1)

    sched = Scheduler(4, 64, 8, CacheManager(64, 4, 4), restore=lambda s: kept.lookup(s.token_ids)[1],
                      on_release=snapshot_finished)

    def run_turn(request_id, prompt):
        seq = Sequence(request_id, prompt, type("P", (), {"max_tokens": 3})())
        sched.add(seq)
        while seq.status.name != "FINISHED":
            out = sched.schedule()
            for s, n in out.scheduled:
                if s.num_computed_tokens + n == s.num_prompt_tokens:
                    kept.put(s.token_ids[:s.num_prompt_tokens], f"gpu:{s.request_id}-prompt", 1)
            sched.postprocess(out, {s.request_id: 500 + s.num_tokens for s in out.sample_seqs})
        return seq

    turn1 = run_turn("t1", toks(10, 1))
    turn2 = run_turn("t2", turn1.token_ids + toks(5, 900))
    assert turn2.num_cached_tokens == turn1.num_tokens - 1 == 12
    assert run_turn("regen", turn2.token_ids[:turn2.num_prompt_tokens]).num_cached_tokens == 12
    assert run_turn("t3", toks(10, 1) + toks(7, 700)).num_cached_tokens == 10, "history edited after the prompt"
    assert sched.cache.is_full


def test_put_files_a_handle_in_the_tier_it_lives_in():
    """A host copy put straight into the host tier never passes through the device tier's demotion (a preempted
    sequence's HostSnap once sat in the gpu tier and was 'demoted' as if it held blocks)."""
    cache = make_cache(budgets=(100, 150, 1000))
    cache.put(toks(5), "gpu:a", 60)
    cache.put(toks(6, 100), "host:b", 100, tier="host")
    assert where(cache) == {"gpu": ["a"], "host": ["b"], "disk": []} and cache.mover.calls == []
    cache.put(toks(7, 200), "host:c", 100, tier="host")  # over the host budget: b goes down to disk
    assert where(cache) == {"gpu": ["a"], "host": ["c"], "disk": ["b"]}
    assert cache.mover.calls == [("host:b", "host", "disk")]
    with pytest.raises(ValueError, match="unknown tier"):
        cache.put(toks(3, 300), "x:d", 1, tier="nvme")


def test_an_entry_exactly_at_the_budget_is_not_oversized_so_the_lru_one_goes_first():
    cache = make_cache(budgets=(100, 1000, 1000))
    cache.put(toks(5), "gpu:a", 30)
    cache.put(toks(5, 10), "gpu:b", 100)
    assert where(cache) == {"gpu": ["b"], "host": ["a"], "disk": []}


def test_discarding_a_sharer_keeps_the_other_findable_and_discarding_all_leaves_no_index():
    cache = make_cache(block_tokens=4)
    a, b = cache.put(toks(9), "gpu:a", 1), cache.put(toks(10), "gpu:b", 1)
    cache.discard(a)
    assert cache.lookup(toks(12)) == (b, 10), "the blocks b shares with a are still indexed"
    cache.discard(b)
    assert cache.lookup(toks(12)) == (None, 0)
    assert (cache.entries, cache.by_node, cache.node_refs) == ({}, {}, {}), "nothing of the index is left behind"


def test_token_chain_grown_in_steps_gives_the_cache_own_hashes_and_a_wrong_chain_is_recomputed():
    cache = make_cache(block_tokens=4)
    grown = state_cache.TokenChain(block_tokens=4)
    assert grown.extend_to(toks(3)).chain == [] and grown.extend_to(toks(11)).extend_to(toks(14)) is grown
    whole = cache.put(toks(14), "gpu:a", 1)
    assert list(grown.tokens) == toks(14) and grown.chain == whole.chain and len(grown.chain) == 3
    tokens, chain = grown.prefix(9)
    assert list(tokens) == toks(9) and chain == whole.chain[:2]
    part = cache.put(tokens, "gpu:b", 1, chain=chain)
    assert cache.lookup(toks(12)) == (part, 9) and cache.lookup(toks(12), chain=grown.chain) == (part, 9)
    wrong = cache.put(toks(6, 100), "gpu:c", 1, chain=[])
    assert cache.get(toks(6, 100)) is wrong and cache.lookup(toks(7, 100)) == (wrong, 6)
    assert len(grown.extend_to(toks(16)).chain) == 4, "a block that ends exactly at the last token is hashed"
    assert grown.chain == cache.put(toks(16), "gpu:d", 1).chain
