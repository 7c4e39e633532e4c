"""A tensor-parallel rank that dies (gloo, TP=2, tiny model): rank 0 must not wait forever. The next call on the
pool fails within seconds with an error that names the rank, and the serving loop turns it into errors on the
requests' streams (then restarts or stops loudly), never a hang."""
import asyncio
import time

import pytest

from engine.serving.async_engine import AsyncEngine
from engine.serving.llm_engine import EngineArgs, LLMEngine
from engine.serving.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


@pytest.fixture
def tp_engine(tiny_official):
    llm = LLMEngine(str(tiny_official), device="cpu", dtype="float32", tensor_parallel_size=2,
                    args=EngineArgs(max_model_len=2048))
    yield llm
    llm.close()


def finish(llm, prompt):
    rid = llm.add_request(prompt, GREEDY)
    while llm.has_unfinished:
        for update in llm.step():
            if update.request_id == rid and update.finished:
                return update


def test_a_killed_rank_fails_the_next_call_within_seconds(tp_engine):
    assert finish(tp_engine, list(range(10, 60))).error is None
    worker = tp_engine.workers.procs[0]
    worker.kill()
    worker.join(5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="rank 1") as info:
        finish(tp_engine, list(range(10, 70)))
    assert time.monotonic() - start < 15 and "died" in str(info.value)
    with pytest.raises(RuntimeError, match="rank 1"):  # and every later call, at once
        tp_engine.workers.call("num_all_reduces")


def test_the_serving_loop_turns_a_dead_rank_into_errors(tp_engine):
    fatal = []
    aengine = AsyncEngine(tp_engine, on_fatal=fatal.append, max_restarts=1)

    async def one(prompt):
        return [u async for u in aengine.stream(prompt, GREEDY)][-1]
    try:
        assert asyncio.run(one(list(range(10, 60)))).error is None
        tp_engine.workers.procs[0].kill()
        async def two():
            return await asyncio.wait_for(asyncio.gather(*(one(list(range(10, 70 + i))) for i in range(2))), 30)
        finals = asyncio.run(two())
        assert all(f.finish_reason == "error" and "rank 1" in f.error for f in finals), finals
        async def late():
            return await asyncio.wait_for(one([5, 6, 7]), 30)
        assert asyncio.run(late()).finish_reason == "error"
    finally:
        aengine.shutdown()
