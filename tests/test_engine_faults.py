"""Engine under faults on the real tiny model: a KV pool too small for the concurrent prompts (preemption with state
reuse on), a request whose step fails, a loop that cannot continue. No request may hang: each ends with its tokens
or with an error on its own stream, and a dead loop wakes every waiter."""
import asyncio

import pytest

from engine.serving.async_engine import AsyncEngine, EngineDead
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


@pytest.fixture
def engine(tiny_official):
    llm = make_engine(tiny_official, prefill_chunk_size=256, max_num_batched_tokens=256)
    yield llm


def serve(llm, **kw):
    return AsyncEngine(llm, **kw)


async def collect(engine, prompt, params=GREEDY):
    updates = [u async for u in engine.stream(prompt, params)]
    return [t for u in updates for t in u.token_ids], updates[-1]


def fail_once(obj, name, error=RuntimeError("injected fault")):
    """Make `obj.name` raise once, then behave again (a fault injected into the real engine)."""
    real, state = getattr(obj, name), {"armed": True}

    def wrapper(*args, **kwargs):
        if state["armed"]:
            state["armed"] = False
            raise error
        return real(*args, **kwargs)
    setattr(obj, name, wrapper)


def test_a_failed_step_ends_its_requests_with_an_error_and_serving_goes_on(engine):
    fail_once(engine.runner, "run")
    aengine = serve(engine)
    try:
        async def main():
            first = await collect(aengine, list(range(10, 40)))
            return first, await collect(aengine, list(range(10, 40)))
        (_, failed), (tokens, ok) = asyncio.run(main())
        assert failed.finish_reason == "error" and "injected fault" in failed.error
        assert ok.error is None and len(tokens) == GREEDY.max_tokens
        assert aengine.health()["alive"] and aengine.health()["restarts"] == 0
    finally:
        aengine.shutdown()


def test_a_recovery_that_raises_resets_the_engine_and_serving_goes_on(engine):
    """The reported chain: a step raised, then the abort of its requests raised too (the loop used to die here
    and every waiter hung). Now the engine resets its bookkeeping and the next request is served."""
    fail_once(engine.runner, "run")
    fail_once(engine, "abort", RuntimeError("abort failed too"))
    aengine = serve(engine)
    try:
        async def main():
            first = await collect(aengine, list(range(10, 40)))
            return first, await collect(aengine, list(range(50, 90)))
        (_, failed), (tokens, ok) = asyncio.run(main())
        assert failed.finish_reason == "error" and "restarted" in failed.error
        assert ok.error is None and len(tokens) == GREEDY.max_tokens
        health = aengine.health()
        assert health["alive"] and health["restarts"] == 1 and health["running_requests"] == 0
        held = {b for e in engine.keeper.index.entries.values() if e.tier == "device" for b in e.handle.blocks}
        blocks = engine.cache_manager.blocks  # a clean pool after the reset: free, or held by the new snapshots
        assert blocks.num_free + len(held) == blocks.num_blocks
    finally:
        aengine.shutdown()


def test_a_loop_that_cannot_continue_wakes_every_waiter(engine):
    fatal = []
    fail_once(engine.runner, "run")
    fail_once(engine, "abort", RuntimeError("abort failed too"))
    aengine = serve(engine, on_fatal=fatal.append, max_restarts=0)

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(collect(aengine, list(range(10, 40 + i))) for i in range(3))),
                                      timeout=30)
    try:
        results = asyncio.run(main())
        assert all(final.finish_reason == "error" for _, final in results), results
        assert not aengine.alive  # set before the waiters were woken
        aengine._thread.join(timeout=10)  # on_fatal runs after the waiters are woken, as the loop's last act
        assert len(fatal) == 1
        assert "failed 1 times" in aengine.health()["error"]
        with pytest.raises(EngineDead):
            aengine.call(lambda e: len(e.requests), timeout=5)
        _, late = asyncio.run(collect(aengine, [5, 6, 7]))  # a new request fails at once, no hang
        assert late.finish_reason == "error" and "must be restarted" in late.error
    finally:
        aengine.shutdown()


def test_call_returns_errors_to_the_caller_and_does_not_kill_the_loop(engine):
    aengine = serve(engine)
    try:
        with pytest.raises(ZeroDivisionError):
            aengine.call(lambda e: 1 / 0, timeout=10)
        assert aengine.call(lambda e: e.max_model_len, timeout=10) == 4096 and aengine.alive
    finally:
        aengine.shutdown()


def test_nan_logits_fail_only_their_request(tiny_official):
    """A request whose logits row is NaN (bad state, a kernel fault) ends with an error; the others in the same
    steps finish with the tokens they get alone, and nothing of the failed request is kept for reuse."""
    llm = make_engine(tiny_official)
    good = [list(range(10, 60)), list(range(100, 170))]
    expected = [drain(llm, [rid := llm.add_request(p, GREEDY)])[0][rid] for p in good]
    sampled = SamplingParams(temperature=0.8, top_p=0.9, seed=5, max_tokens=8, ignore_eos=True)
    rids = [llm.add_request(p, GREEDY) for p in good] + [llm.add_request(list(range(300, 400)), sampled)]
    poisoned, real_run = llm.scheduler.requests[rids[2]], llm.runner.run

    def run(items, *args):
        out = real_run(items, *args)
        for j, item in enumerate(items):
            if item.slot == poisoned.state_slot and item.past_len + len(item.new_tokens) > 100:
                out[j] = float("nan")  # from its first decode on
        return out
    llm.runner.run = run
    got, finals = drain(llm, rids)
    assert [got[r] for r in rids[:2]] == expected and all(finals[r].error is None for r in rids[:2])
    assert finals[rids[2]].finish_reason == "error" and "NaN" in finals[rids[2]].error
    assert not any(e.num_tokens > 100 and e.token_ids[0] == 300 for e in llm.keeper.index.entries.values())
    assert llm.cache_manager.slots.num_free == llm.cache_manager.slots.num_slots


def test_health_answers_during_a_long_step(engine):
    """/health reads AsyncEngine.health(), which must not wait for the engine thread: here a step takes 3 s."""
    import threading
    import time
    real_run = engine.runner.run

    def slow(items, *args):
        time.sleep(3)
        return real_run(items, *args)
    engine.runner.run = slow
    aengine = serve(engine)
    try:
        worker = threading.Thread(target=lambda: asyncio.run(collect(aengine, list(range(10, 40)),
                                                                     SamplingParams(max_tokens=1))))
        worker.start()
        while aengine.step_started is None:
            time.sleep(0.01)
        start = time.perf_counter()
        health = aengine.health()
        assert time.perf_counter() - start < 0.5 and health["running_requests"] == 1 and health["alive"]
        time.sleep(0.2)
        assert aengine.health()["step_running_s"] >= 0.2
        worker.join()
    finally:
        aengine.shutdown()
