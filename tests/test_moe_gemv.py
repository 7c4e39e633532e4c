"""Decode-sized fused MoE (kernels/moe/gemv.py) against the PyTorch reference, through Triton's interpreter.

The routing table (every slot once, one expert per block, unused blocks marked), int8 and bf16/fp32 weights, one
token to 64, several tokens on one expert (more than a block), split-K on and off for both matrices, and the
dispatch from `fused_moe(impl="triton")`.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from engine.model.quant import quantize_rows  # noqa: E402
from kernels.moe import fused_moe, naive  # noqa: E402
from kernels.moe.gemv import BLOCK_M, moe_gemv, route  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(T, H, I, E, k, dtype, int8, seed=0, hot_expert=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    w13 = torch.randn(E, 2 * I, H, generator=g) / H ** 0.5
    w2 = torch.randn(E, H, I, generator=g) / I ** 0.5
    logits = torch.randn(T, E, generator=g)
    if hot_expert is not None:
        logits[:, hot_expert] += 100.0  # every token picks it: more slots than one block holds
    weights, ids = logits.softmax(-1).topk(k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    if int8:
        (w13, s13), (w2, s2) = quantize_rows(w13), quantize_rows(w2)
        return x, w13, w2, weights, ids, s13, s2
    return x, w13.to(dtype), w2.to(dtype), weights, ids, None, None


@pytest.mark.parametrize("T,E,k", [(1, 4, 2), (7, 32, 2), (40, 8, 2), (64, 32, 2), (5, 3, 3)], ids=str)
def test_route_groups_every_slot_once(T, E, k):
    ids = torch.rand(T, E, generator=torch.Generator().manual_seed(T)).topk(k, dim=-1).indices
    sorted_ids, block_expert = route(ids, E)
    S = ids.numel()
    real = sorted_ids[sorted_ids < S]
    assert sorted(real.tolist()) == list(range(S))
    assert ((sorted_ids == S) | (sorted_ids < S)).all()
    flat = ids.flatten()
    for b, e in enumerate(block_expert.tolist()):
        slots = sorted_ids[b * BLOCK_M:(b + 1) * BLOCK_M]
        slots = slots[slots < S].long()
        if e < 0:
            assert slots.numel() == 0
        else:
            assert slots.numel() > 0 and (flat[slots] == e).all()
    used = block_expert[block_expert >= 0]
    assert (used.diff() >= 0).all()  # experts in order: one expert's blocks are adjacent


CASES = [(1, False), (3, False), (17, False), (64, False), (2, True), (5, True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("int8", [True, False], ids=["int8", "wdtype"])
@pytest.mark.parametrize("T,split", CASES, ids=[f"T{t}-{'split' if s else 'auto'}" for t, s in CASES])
def test_matches_reference(T, split, int8, dtype):
    args = make(T, H=96, I=80, E=6, k=2, dtype=dtype, int8=int8, seed=T)
    ref = naive.fused_moe(*args)
    out = moe_gemv(*args, split=(2, 3) if split else None, config=dict(BLOCK_N=32, BLOCK_K=32))
    err = rel_err(out, ref)
    print(f"T={T} split={split} int8={int8} {dtype}: rel err {err:.2e}")
    assert out.dtype == dtype and out.shape == args[0].shape and err <= TOL[dtype], err


def test_hot_expert_spans_several_blocks():
    args = make(40, H=64, I=48, E=5, k=2, dtype=torch.float32, int8=True, seed=7, hot_expert=1)
    assert (args[4] == 1).sum() == 40
    assert rel_err(moe_gemv(*args, config=dict(BLOCK_N=16, BLOCK_K=64)), naive.fused_moe(*args)) <= 1e-5


def test_fused_moe_dispatches_decode_batches_here(monkeypatch):
    from kernels.moe import gemv
    calls = []
    real = gemv.moe_gemv
    monkeypatch.setattr(gemv, "moe_gemv", lambda *a, **kw: calls.append(a[0].shape[0]) or real(*a, **kw))
    for T in (2, 65):
        args = make(T, H=32, I=16, E=4, k=2, dtype=torch.float32, int8=True, seed=T)
        assert rel_err(fused_moe(*args, impl="triton"), naive.fused_moe(*args)) <= 1e-5
    assert calls == [2]
