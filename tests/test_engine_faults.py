"""Engine under faults on the real tiny model: a KV pool too small for the concurrent prompts (preemption with state
reuse on), a request whose step fails, a loop that cannot continue. No request may hang: each ends with its tokens
or with an error on its own stream, and a dead loop wakes every waiter."""
import asyncio

import pytest

from engine.serving.async_engine import AsyncEngine
from engine.serving.llm_engine import EngineArgs, LLMEngine
from engine.serving.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def make_engine(path, **kw):
    return LLMEngine(str(path), device="cpu", dtype="float32", args=EngineArgs(max_model_len=4096, **kw))


def drain(engine, rids):
    got = {rid: [] for rid in rids}
    finals = {}
    for _ in range(2000):
        if not engine.has_unfinished:
            break
        for u in engine.step():
            got[u.request_id] += u.token_ids
            if u.finished:
                finals[u.request_id] = u
    return got, finals


def test_preempted_snapshots_go_to_the_host_tier_and_demote_cleanly(tiny_official):
    """Preemption keeps a host copy of the sequence's state; it must be filed in the host tier (it used to be put in
    the device tier and the next demotion failed: 'HostSnap' object has no attribute 'blocks')."""
    prompts = [list(range(20 + i, 420 + i)) for i in range(4)]
    roomy = make_engine(tiny_official, enable_state_reuse=False)
    expected = [drain(roomy, [roomy.add_request(p, GREEDY)])[0] for p in prompts]
    expected = [next(iter(e.values())) for e in expected]
    tight = make_engine(tiny_official, kv_cache_tokens=5 * 256, max_num_seqs=4, device_state_bytes=0)
    rids = [tight.add_request(p, GREEDY) for p in prompts]
    got, finals = drain(tight, rids)
    assert tight.scheduler.num_preemptions > 0
    assert all(finals[r].error is None for r in rids), [finals[r].error for r in rids]
    assert [got[r] for r in rids] == expected
    for entry in tight.keeper.index.entries.values():
        assert (entry.tier == "device") == hasattr(entry.handle, "blocks"), entry
