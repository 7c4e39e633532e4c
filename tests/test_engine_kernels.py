"""The engine on its Triton kernels (CPU: Triton's interpreter) against the PyTorch path, and the decode-step
bookkeeping that CUDA graph replay relies on (buckets, padding rows that write nowhere) through the eager path."""
import pytest
import torch

from engine import LLM, SamplingParams
from engine.runtime.graphs import bucket_for, graph_buckets
from engine.model.tiny import write_checkpoint
from engine.runtime.runner import StepItem


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def ids_of(llm, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, llm.tokenizer.vocab_size, (n,), generator=g).tolist()


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    """The tiny preset cut to one lightning and one softmax layer: the interpreter runs every kernel, quickly."""
    return write_checkpoint(tmp_path_factory.mktemp("two_layers"), seed=4,
                            overrides=dict(num_hidden_layers=2, softmax_every=2))


@pytest.fixture(scope="module")
def triton_llm(two_layers):
    return LLM(str(two_layers), device="cpu", dtype="float32", kernel_impl="triton", max_model_len=2048)


@pytest.fixture(scope="module")
def torch_llm(two_layers):
    return LLM(str(two_layers), device="cpu", dtype="float32", max_model_len=2048)


def test_triton_kernels_are_on(triton_llm, torch_llm):
    layers = triton_llm.model.model.layers
    assert {l.self_attn.impl for l in layers} == {"triton"} and triton_llm.model.fused_ops
    assert {l.block_sparse_moe.impl for l in layers} == {"triton"}
    assert {l.self_attn.impl for l in torch_llm.model.model.layers} == {"torch"} and not torch_llm.model.fused_ops


def test_prefill_logits_match_the_torch_path(triton_llm, torch_llm):
    assert [l.is_lightning for l in torch_llm.model.model.layers] == [True, False]
    ids = ids_of(torch_llm, 70, seed=1)  # lightning prefill, paged prefill attention, grouped-GEMM MoE (T > 64)
    assert rel(triton_llm.logits(ids), torch_llm.logits(ids)) <= 1e-4


def test_greedy_decode_matches_the_torch_path(triton_llm, torch_llm):
    # decode: lightning recurrence, paged decode attention, MoE GEMV, fused norms/router/gate; 2 ragged sequences
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    prompts = [ids_of(torch_llm, n, seed=n) for n in (9, 30)]
    got = [o.outputs[0].token_ids for o in triton_llm.generate(prompt_token_ids=prompts, sampling_params=params)]
    want = [o.outputs[0].token_ids for o in torch_llm.generate(prompt_token_ids=prompts, sampling_params=params)]
    assert got == want


def test_decode_step_logits_match_the_torch_path(triton_llm, torch_llm):
    prompt = ids_of(torch_llm, 24, seed=7)
    steps = []
    for llm in (triton_llm, torch_llm):
        llm.runner.run([StepItem(prompt, 0, 0, [0]), StepItem(prompt[:7], 0, 1, [1])])
        steps.append(llm.runner.run([StepItem([5], 24, 0, [0]), StepItem([9], 7, 1, [1])]))
    assert rel(steps[0], steps[1]) <= 1e-4


def test_buckets():
    assert graph_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert graph_buckets(5) == [1, 2, 4, 8]
    assert graph_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 96, 128]
    assert [bucket_for(n, graph_buckets(100)) for n in (1, 3, 33, 65, 128, 129)] == [1, 4, 64, 96, 128, None]


def test_padded_decode_equals_unpadded_and_writes_nowhere(torch_llm):
    """The replay bookkeeping on CPU: 3 sequences run in bucket 4 (one padding row) give the unpadded logits, and
    no state slot or KV row outside the 3 sequences and the scratch block changes."""
    llm, cache = torch_llm, torch_llm.cache
    runner = llm.runner
    prompts = [ids_of(llm, n, seed=n) for n in (5, 12, 20)]
    items = [StepItem(p, 0, s, [s]) for s, p in enumerate(prompts)]
    for s in range(cache.num_slots):
        cache.clear_slot(s)
    runner.run(items)
    step = [StepItem([3 + s], len(p), s, [s]) for s, p in enumerate(prompts)]
    before = ({l: t.clone() for l, t in cache.states.items()}, {l: t.clone() for l, t in cache.keys.items()})
    plain = runner.run(step)
    assert runner.last_bucket is None
    after_plain = ({l: t.clone() for l, t in cache.states.items()}, {l: t.clone() for l, t in cache.keys.items()})
    for l, t in before[0].items():
        cache.states[l].copy_(t)
    runner.pad_decode = True
    try:
        padded = runner.run(step)
        assert runner.last_bucket == 4
    finally:
        runner.pad_decode = False
    assert padded.shape == plain.shape and torch.allclose(padded, plain, rtol=1e-5, atol=1e-5)
    scratch = slice(cache.scratch_row, cache.scratch_row + cache.block_size)
    used = cache.block_size * 3  # blocks 0..2 belong to the three sequences
    for l, t in cache.states.items():
        assert torch.equal(t[3:], after_plain[0][l][3:])  # padding rows (slot -1) touched no other slot
        assert torch.allclose(t[:3], after_plain[0][l][:3], rtol=1e-5, atol=1e-5)
    for l, k in cache.keys.items():
        assert torch.equal(k[used:cache.scratch_row], after_plain[1][l][used:cache.scratch_row])
        assert torch.allclose(k[:used], after_plain[1][l][:used], rtol=1e-5, atol=1e-5)
        assert k[scratch].abs().sum() > 0  # the padding row's K went to the scratch block


def test_padded_decode_generation_is_identical(torch_llm):
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompts = [ids_of(torch_llm, n, seed=n + 50) for n in (4, 9, 15, 22, 30)]  # 5 -> bucket 8
    plain = torch_llm.generate(prompt_token_ids=prompts, sampling_params=params)
    torch_llm.runner.pad_decode = True
    try:
        padded = torch_llm.generate(prompt_token_ids=prompts, sampling_params=params)
    finally:
        torch_llm.runner.pad_decode = False
    assert [o.outputs[0].token_ids for o in padded] == [o.outputs[0].token_ids for o in plain]


def test_step_buffers_slot_mapping_follows_the_block_table(torch_llm):
    runner, cache = torch_llm.runner, torch_llm.cache
    item = StepItem(list(range(10)), 250, 1, [7, 3])  # crosses from block 7 into block 3
    ids, ctx = runner._prefill_buffers([item]).fill([item])
    assert ctx.slot_mapping.tolist() == cache.rows([7, 3], 260)[250:].tolist()
    assert ctx.seq_lens.tolist() == [260] and ctx.block_tables.tolist() == [[7, 3]] and ctx.bounds == [0, 10]
    assert ctx.positions.tolist() == list(range(250, 260)) and ids.tolist() == list(range(10))


def test_enforce_eager_reaches_the_engine_args():
    from app import parse_args
    from engine.serving.llm_engine import EngineArgs
    assert parse_args(["--enforce-eager"]).enforce_eager and not parse_args([]).enforce_eager
    assert EngineArgs().enforce_eager is False and EngineArgs(enforce_eager=True).enforce_eager
