"""Serving engine on the real tiny model: state reuse across turns, abort, concurrency, eviction, preemption."""
import asyncio

import pytest
import torch

from engine.serving.async_engine import AsyncEngine
from engine.text.chat_format import strip_think
from engine.serving.llm_engine import EngineArgs, LLMEngine
from engine.serving.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def make_engine(path, **kw):
    return LLMEngine(str(path), device="cpu", dtype="float32", args=EngineArgs(max_model_len=4096, **kw))


def run(engine, prompt, params=GREEDY):
    rid = engine.add_request(prompt, params)
    tokens, final = [], None
    while final is None:
        for u in engine.step():
            if u.request_id == rid:
                tokens += u.token_ids
                final = u if u.finished else None
    return tokens, final


def conversation(engine):
    """Three turns + a regenerate; turn 2 replays turn 1's answer with a <think> block dropped."""
    tok = engine.tokenizer
    doc = "A long document. " * 60
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": doc + "Summarise it."}]
    outs, cached = [], []
    for turn in range(3):
        ids, final = run(engine, tok.encode_chat(msgs))
        outs.append(ids)
        cached.append(final.stats["cached_tokens"])
        answer = tok.decode(ids)
        replay = strip_think("<think>\nsome reasoning\n</think>\n" + answer) if turn == 0 else answer
        msgs += [{"role": "assistant", "content": replay}, {"role": "user", "content": f"Question {turn}?"}]
    ids, final = run(engine, tok.encode_chat(msgs[:-2]))  # regenerate the last answer
    outs.append(ids)
    cached.append(final.stats["cached_tokens"])
    return outs, cached


def test_state_reuse_gives_identical_greedy_outputs(tiny_official):
    with_reuse, cached = conversation(make_engine(tiny_official))
    without, cached_off = conversation(make_engine(tiny_official, enable_state_reuse=False))
    assert with_reuse == without
    assert cached_off == [0, 0, 0, 0]
    assert cached[0] == 0 and all(c > 200 for c in cached[1:]), cached


def test_regenerate_reuses_the_whole_prompt_but_one_token(tiny_official):
    engine = make_engine(tiny_official)
    prompt = engine.tokenizer.encode_chat([{"role": "user", "content": "Tell me a story. " * 40}])
    first, _ = run(engine, prompt)
    again, final = run(engine, prompt)
    assert again == first and final.stats["cached_tokens"] == len(prompt) - 1


def test_abort_mid_stream_frees_every_block_and_slot(tiny_official):
    engine = make_engine(tiny_official, enable_state_reuse=False, prefill_chunk_size=64, max_num_batched_tokens=64)
    rids = [engine.add_request(list(range(10, 300)), SamplingParams(max_tokens=50, ignore_eos=True)) for _ in range(3)]
    for _ in range(3):
        engine.step()
    assert not engine.cache_manager.is_full
    for rid in rids:
        engine.abort(rid)
    assert engine.cache_manager.is_full and not engine.has_unfinished


def test_abort_with_reuse_keeps_only_snapshot_blocks(tiny_official):
    engine = make_engine(tiny_official)
    rid = engine.add_request(list(range(10, 700)), SamplingParams(max_tokens=50, ignore_eos=True))
    for _ in range(4):
        engine.step()
    engine.abort(rid)
    held = len({b for e in engine.keeper.index.entries.values() if e.tier == "device" for b in e.handle.blocks})
    blocks = engine.cache_manager.blocks
    assert engine.cache_manager.slots.num_free == engine.cache_manager.slots.num_slots
    assert blocks.num_free + held == blocks.num_blocks and held > 0


def test_eviction_under_tiny_budget_falls_back_to_recompute(tiny_official):
    tight, cached = conversation(make_engine(tiny_official, device_state_bytes=0, host_state_bytes=0))
    roomy, _ = conversation(make_engine(tiny_official))
    assert tight == roomy and cached == [0, 0, 0, 0]


def test_snapshots_demoted_to_host_and_disk_restore_identically(tiny_official, tmp_path):
    reference, _ = conversation(make_engine(tiny_official))
    for host in (1 << 30, 0):  # host tier only, then straight through to disk
        engine = make_engine(tiny_official, device_state_bytes=0, host_state_bytes=host,
                             disk_state_bytes=1 << 30, disk_state_dir=str(tmp_path / f"d{host}"))
        outs, cached = conversation(engine)
        assert outs == reference and all(c > 200 for c in cached[1:])
        tiers = {e.tier for e in engine.keeper.index.entries.values()}
        assert tiers == ({"host"} if host else {"disk"})


def test_restore_is_bit_identical(tiny_official):
    engine = make_engine(tiny_official, device_state_bytes=0)
    prompt = list(range(5, 600))
    run(engine, prompt + [7])  # keeps the state of `prompt` (before its last token) on the host
    entry, n = engine.keeper.index.lookup(prompt + [7, 9])
    assert entry.tier == "host" and n == len(prompt)
    rid = engine.add_request(prompt + [7, 9], SamplingParams(max_tokens=1))
    seq = engine.scheduler.requests[rid]
    engine.scheduler.schedule()  # admits with the restored length and copies nothing yet
    engine.keeper.restore_into(seq)
    for l, s in engine.cache.states.items():
        assert torch.equal(s[seq.state_slot], entry.handle.states[l])
    keys, values = engine.cache.read_rows(engine.cache.rows(seq.block_table, n))
    assert keys.keys() == values.keys() == entry.handle.keys.keys() == entry.handle.values.keys()
    assert all(torch.equal(keys[l], entry.handle.keys[l]) for l in keys)
    assert all(torch.equal(values[l], entry.handle.values[l]) for l in values)
    assert not any(torch.equal(keys[l], values[l]) for l in keys)  # K and V differ, so a V-from-K restore fails


def test_preemption_under_a_tiny_kv_pool_keeps_outputs(tiny_official):
    prompts = [list(range(20 + i, 420 + i)) for i in range(4)]
    roomy = make_engine(tiny_official, enable_state_reuse=False)
    expected = [run(roomy, p)[0] for p in prompts]
    tight = make_engine(tiny_official, enable_state_reuse=False, kv_cache_tokens=5 * 256, max_num_seqs=4)
    rids = [tight.add_request(p, GREEDY) for p in prompts]
    got = {rid: [] for rid in rids}
    while tight.has_unfinished:
        for u in tight.step():
            got[u.request_id] += u.token_ids
    assert [got[r] for r in rids] == expected
    assert tight.scheduler.num_preemptions > 0


@pytest.fixture(scope="module")
def async_engine(tiny_official):
    engine = AsyncEngine(make_engine(tiny_official, enable_state_reuse=False, prefill_chunk_size=512,
                                     max_num_batched_tokens=1024))
    yield engine
    engine.shutdown()


async def collect(engine, prompt, params=GREEDY):
    updates = [u async for u in engine.stream(prompt, params)]
    return [t for u in updates for t in u.token_ids], updates


def test_32_concurrent_streams_match_their_solo_runs(async_engine):
    prompts = [async_engine.tokenizer.encode(f"Prompt number {i}: " + "words " * (i * 3)) for i in range(32)]

    async def main():
        solo = [(await collect(async_engine, p))[0] for p in prompts[:4]]
        together = await asyncio.gather(*(collect(async_engine, p) for p in prompts))
        return solo, [t for t, _ in together], [u for _, u in together]

    solo, together, updates = asyncio.run(main())
    assert together[:4] == solo
    assert all(len(t) == GREEDY.max_tokens for t in together)
    stats = updates[5][-1].stats
    assert stats["prompt_tokens"] == len(prompts[5]) and stats["completion_tokens"] == 12 and stats["ttft"] > 0


def test_stream_reports_prefill_progress_and_bad_requests_fail_alone(async_engine):
    long_prompt = list(range(10, 2000)) * 2

    async def main():
        good = collect(async_engine, long_prompt, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
        bad = collect(async_engine, list(range(10, 2000)) * 3)  # over the 4096-token window
        bad_id = collect(async_engine, [5, 10 ** 6])
        return await asyncio.gather(good, bad, bad_id)

    (tokens, updates), (_, bad_updates), (_, bad_id) = asyncio.run(main())
    assert "outside the model's vocabulary" in bad_id[-1].error
    progress = [u.prefill_done for u in updates if not u.token_ids and not u.finished]
    assert len(tokens) == 3 and progress and progress == sorted(progress) and progress[-1] < len(long_prompt)
    assert bad_updates[-1].finish_reason == "error" and "over by" in bad_updates[-1].error


def test_leaving_the_stream_aborts_the_request(async_engine):
    async def main():
        agen = async_engine.stream(list(range(10, 50)), SamplingParams(max_tokens=500, ignore_eos=True))
        async for update in agen:
            if update.token_ids:
                break
        await agen.aclose()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if async_engine.call(lambda e: not e.has_unfinished and e.cache_manager.is_full):
                return True
        return False

    assert asyncio.run(main())


def test_force_tokens_closes_the_thinking(async_engine):
    tok = async_engine.tokenizer
    close = tok.encode("\n</think>\n")

    async def main():
        text = ""
        agen = async_engine.stream(tok.encode("<think>\nhmm"), SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
        async for u in agen:
            text += u.text
            if len(u.token_ids) and "</think>" not in text and len(text) > 3:
                async_engine.force_tokens(u.request_id, close)
        return text

    assert "\n</think>\n" in asyncio.run(main())


def test_device_snapshots_give_way_to_running_sequences(tiny_official):
    engine = make_engine(tiny_official, kv_cache_tokens=6 * 256, device_state_bytes=1 << 30)
    run(engine, list(range(10, 1000)))  # leaves ~4 blocks held by device snapshots
    tokens, final = run(engine, list(range(2000, 1000, -1)))  # needs 4+ blocks: snapshots must move to the host
    assert final.finish_reason == "length" and len(tokens) == GREEDY.max_tokens
    assert engine.keeper.index.stats()["num_demoted"] > 0


def test_keep_point_before_a_forced_think_serves_the_next_turn(tiny_official):
    engine = make_engine(tiny_official)
    tok = engine.tokenizer
    msgs = [{"role": "user", "content": "Read this. " * 80}]
    gen_prompt = tok.encode_chat(msgs)
    think = tok.encode("<think>\n")
    engine.add_request(gen_prompt + think, GREEDY, keep_at=[len(gen_prompt)])
    while engine.has_unfinished:
        engine.step()
    follow = tok.encode_chat(msgs + [{"role": "assistant", "content": "An answer."}, {"role": "user", "content": "And?"}])
    _, final = run(engine, follow + think)
    assert final.stats["cached_tokens"] == len(gen_prompt)


def test_thinking_budget_is_closed_by_the_engine_at_exactly_the_budget(tiny_official):
    engine = make_engine(tiny_official)
    tok = engine.tokenizer
    prompt = tok.encode_chat([{"role": "user", "content": "Think."}]) + tok.encode("<think>\n")
    engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True),
                       starts_in_reasoning=True, thinking_budget=6)
    text, sampled, final = "", [], None
    while final is None:
        for u in engine.step():
            text += u.text
            sampled += u.token_ids
            final = u if u.finished else None
    reasoning, answer = text.split("\n</think>\n")
    assert reasoning == tok.decode(sampled[:6]) and answer == tok.decode(sampled[6:])
    assert final.stats["completion_tokens"] == 30 and final.stats["reasoning_tokens"] >= 6


def test_several_keep_points_in_one_chunk_are_all_kept(tiny_official):
    engine = make_engine(tiny_official)
    prompt = list(range(10, 400))
    engine.add_request(prompt, GREEDY, keep_at=[100, 250])
    while engine.has_unfinished:
        engine.step()
    kept = sorted(e.num_tokens for e in engine.keeper.index.entries.values())
    assert {100, 250, 389} <= set(kept), kept


def test_a_caller_keep_point_near_the_end_replaces_the_default_one(tiny_official):
    engine = make_engine(tiny_official)
    prompt = list(range(10, 400))  # 390 tokens; the generation prompt would end 3 tokens before a forced <think>
    engine.add_request(prompt, GREEDY, keep_at=[387])
    while engine.has_unfinished:
        engine.step()
    kept = {e.num_tokens for e in engine.keeper.index.entries.values()}
    assert 387 in kept and 389 not in kept
    _, final = run(engine, prompt + [5])  # a regenerate-like request still restores up to the caller's point
    assert final.stats["cached_tokens"] >= 387
