"""Chunked prefill with the host running ahead (runner `overlap`, `need_logits`) against the synchronous reference:
bit-equal logits, cache and state on the real tiny model (CPU); the engine's per-chunk progress and LM-head skips."""
import pytest
import torch

from engine import LLM, SamplingParams
from engine.model.tiny import write_checkpoint
from engine.runtime.runner import StepItem

CHUNK = 64


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    """One lightning and one softmax layer: both kinds of long-prompt state (lightning state, paged KV)."""
    return write_checkpoint(tmp_path_factory.mktemp("overlap"), seed=6, overrides=dict(num_hidden_layers=2,
                                                                                         softmax_every=2))


@pytest.fixture(scope="module")
def llm(two_layers):
    return LLM(str(two_layers), device="cpu", dtype="float32", max_model_len=2048, prefill_chunk_size=CHUNK,
               max_num_batched_tokens=CHUNK, enable_state_reuse=False)


def chunked_prefill(llm, ids, overlap: bool) -> tuple[torch.Tensor, list, dict]:
    """Prefill `ids` in CHUNK-token steps through the runner; (last chunk's logits, the middle chunks' returns,
    copies of the slot's state and KV rows)."""
    runner, blocks = llm.runner, [3, 0, 5, 1]  # a shuffled block table: rows cross blocks out of order
    runner.overlap = overlap
    try:
        middle = []
        for start in range(0, len(ids), CHUNK):
            last = start + CHUNK >= len(ids)
            out = runner.run([StepItem(ids[start:start + CHUNK], start, 0, blocks)], need_logits=last or not overlap)
            if not last:
                middle.append(out)
    finally:
        runner.overlap = True
    rows = llm.cache.rows(blocks, len(ids))
    keys, values = llm.cache.read_rows(rows)
    return out, middle, {"state": {l: s[0].clone() for l, s in llm.cache.states.items()}, "k": keys, "v": values}


def test_overlapped_chunks_give_bit_equal_logits_state_and_kv(llm):
    ids = torch.randint(0, llm.tokenizer.vocab_size, (300,), generator=torch.Generator().manual_seed(3)).tolist()
    ref_logits, ref_middle, ref_cache = chunked_prefill(llm, ids, overlap=False)
    logits, middle, cache = chunked_prefill(llm, ids, overlap=True)
    assert torch.equal(logits, ref_logits) and logits.shape == (1, llm.config.vocab_size)
    assert middle == [None] * 4 and all(m.shape == (1, llm.config.vocab_size) for m in ref_middle)
    for name in ("state", "k", "v"):
        assert ref_cache[name].keys() == cache[name].keys()
        assert all(torch.equal(ref_cache[name][l], cache[name][l]) for l in cache[name])
    # and the chunked result is the model's: the last position of one whole-prompt forward (up to fp32 rounding)
    whole = llm.logits(ids)[-1:]
    assert torch.allclose(logits, whole, rtol=1e-4, atol=1e-4)


def test_engine_reports_every_chunk_and_runs_the_lm_head_only_to_sample(llm):
    engine, real_run, calls = llm.engine, llm.runner.run, []

    def recording_run(items, all_logits=False, need_logits=True):
        calls.append((sum(len(it.new_tokens) for it in items), need_logits))
        return real_run(items, all_logits, need_logits)

    prompt = list(range(10, 10 + 3 * CHUNK + 17))
    greedy = SamplingParams(temperature=0, max_tokens=2, ignore_eos=True)
    results = {}
    for overlap in (False, True):
        llm.runner.overlap, llm.runner.run, calls[:] = overlap, recording_run, []
        try:
            rid, progress, tokens = engine.add_request(prompt, greedy), [], []
            while engine.has_unfinished:
                for u in engine.step():
                    tokens += u.token_ids
                    if not u.token_ids and not u.finished:
                        progress.append((u.prefill_done, u.prefill_total))
        finally:
            llm.runner.overlap, llm.runner.run = True, real_run
        results[overlap] = tokens
        assert progress == [(CHUNK * i, len(prompt)) for i in range(1, 4)]  # one update per middle chunk
        # three middle chunks without the LM head, the last chunk (17 tokens) and one decode sample
        assert calls == [(CHUNK, False)] * 3 + [(17, True), (1, True)]
    assert results[True] == results[False] and len(results[True]) == 2
