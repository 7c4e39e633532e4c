"""Triton fused MoE (int8 / bf16 / fp32 weights) against the PyTorch reference, through Triton's interpreter.

Covers the routing sort (every slot once, one expert per block), the decode GEMV path (few slots) and the grouped
GEMM path, experts with no tokens, and sizes that are not multiples of the blocks.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from engine.model.quant import quantize_rows  # noqa: E402
from kernels.moe import fused_moe, naive  # noqa: E402
from kernels.moe.fused import align  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def make(T, H, I, E, k, dtype, int8, seed=42, skip_expert=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    w13 = torch.randn(E, 2 * I, H, generator=g) / H ** 0.5
    w2 = torch.randn(E, H, I, generator=g) / I ** 0.5
    logits = torch.randn(T, E, generator=g)
    if skip_expert is not None:
        logits[:, skip_expert] = -1e9
    weights, ids = logits.softmax(-1).topk(k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    if int8:
        (w13, s13), (w2, s2) = quantize_rows(w13), quantize_rows(w2)
        return x, w13, w2, weights, ids, s13, s2
    return x, w13.to(dtype), w2.to(dtype), weights, ids, None, None


@pytest.mark.parametrize("T, E, block_m", [(1, 4, 16), (37, 8, 16), (300, 32, 64)], ids=lambda v: str(v))
def test_align_sorts_every_slot_once_one_expert_per_block(T, E, block_m):
    ids = torch.randint(0, E, (T, 2), generator=torch.Generator().manual_seed(T))
    sorted_ids, block_expert, used = align(ids, E, block_m)
    n = ids.numel()
    real = sorted_ids[sorted_ids < n]
    assert sorted(real.tolist()) == list(range(n))
    flat = ids.flatten()
    for b in range(int(used) // block_m):
        slots = sorted_ids[b * block_m:(b + 1) * block_m]
        slots = slots[slots < n]
        assert (flat[slots.long()] == block_expert[b]).all()
    assert int(used) % block_m == 0 and (sorted_ids[int(used):] == n).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("int8", [True, False], ids=["int8", "wdtype"])
@pytest.mark.parametrize("T", [1, 3, 37], ids=["T1-gemv", "T3-gemv", "T37-gemm"])
def test_triton_matches_reference(T, int8, dtype):
    args = make(T, H=96, I=80, E=6, k=2, dtype=dtype, int8=int8, skip_expert=2)
    ref = naive.fused_moe(*args)
    out = fused_moe(*args, impl="triton")
    err = rel_err(out, ref)
    print(f"T={T} int8={int8} {dtype}: rel err {err:.2e}")
    assert out.dtype == dtype and err <= TOL[dtype], err


def test_wide_gemv_tiles_match(monkeypatch):
    from kernels.moe import fused
    monkeypatch.setattr(fused, "PROGRAMS_WANTED", 0)  # the tiling used when there are many output rows
    args = make(2, H=200, I=72, E=4, k=2, dtype=torch.bfloat16, int8=True)
    assert rel_err(fused_moe(*args, impl="triton"), naive.fused_moe(*args)) <= TOL[torch.bfloat16]


def test_large_batch_uses_bigger_blocks_and_matches():
    args = make(600, H=64, I=48, E=8, k=2, dtype=torch.float32, int8=True, seed=1)
    assert rel_err(fused_moe(*args, impl="triton"), naive.fused_moe(*args)) <= 1e-5


def test_bad_shapes_are_named():
    x, w13, w2, weights, ids, s13, s2 = make(2, 32, 16, 4, 2, torch.float32, int8=True)
    with pytest.raises(ValueError, match="x must be"):
        fused_moe(x[:, :8], w13, w2, weights, ids, s13, s2)
    with pytest.raises(ValueError, match="need their scales"):
        fused_moe(x, w13, w2, weights, ids)


@pytest.mark.parametrize("swap", [False, True], ids=["a-left", "w-left"])
@pytest.mark.parametrize("int8", [True, False], ids=["int8", "bf16"])
def test_prefill_tiles_both_orientations_uneven_k(monkeypatch, swap, int8):
    """The prefill grouped GEMM (small stand-in tiles): both operand orders, K not a multiple of BLOCK_K (the down
    GEMM's K=40 with BLOCK_K 32), N not a multiple of BLOCK_N, several row blocks per expert and GROUP_M groups."""
    from kernels.moe import fused
    monkeypatch.setattr(fused, "SMALL_MAX_SLOTS", 0)
    tiles = (16, 32, 32, 4, 3, swap, 2)
    monkeypatch.setitem(fused.PREFILL_TILES, "int8" if int8 else "bf16", tiles)
    args = make(70, H=64, I=40, E=5, k=2, dtype=torch.bfloat16, int8=int8, seed=7)
    assert fused.gemm_tiles(140, int8) == tiles
    assert rel_err(fused_moe(*args, impl="triton"), naive.fused_moe(*args)) <= TOL[torch.bfloat16]


@pytest.mark.parametrize("swap, int8, dtype", [(False, True, torch.bfloat16), (True, True, torch.bfloat16),
                                               (False, False, torch.bfloat16), (True, True, torch.float32)],
                         ids=["int8-a-left", "int8-w-left", "bf16-a-left", "int8-w-left-fp32"])
def test_silu_up_fused_into_gate_up_epilogue(monkeypatch, swap, int8, dtype):
    """The gate/up GEMM writing SiLU(gate) * up itself (SILU_UP variant) against the reference: I=40 not a multiple of
    BLOCK_N (16), uneven K in the down GEMM, several row blocks per expert; the fused launch must be the one taken."""
    from kernels.moe import fused
    monkeypatch.setattr(fused, "SMALL_MAX_SLOTS", 0)
    kind = "int8" if int8 else "bf16"
    monkeypatch.setitem(fused.PREFILL_TILES, kind, (16, 32, 32, 4, 3, swap, 2))
    monkeypatch.setitem(fused.SILU_UP_TILES, kind, (16, 16, 32, 4, 3, swap, 2))
    monkeypatch.setitem(fused.SILU_UP, kind, True)
    calls = []
    real = fused._expert_gemm
    monkeypatch.setattr(fused, "_expert_gemm", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    args = make(70, H=64, I=40, E=5, k=2, dtype=dtype, int8=int8, seed=11)
    out = fused_moe(*args, impl="triton")
    assert calls[0] == {"silu_up": True} and len(calls) == 2
    assert out.dtype == dtype and rel_err(out, naive.fused_moe(*args)) <= TOL[dtype]


def test_fast_int8_conversion_matches(monkeypatch):
    """FAST_INT8 (int8 weights turned into floats by bit arithmetic, not the conversion unit) against the reference,
    with SiLU * up fused and not; fp32 activations so the comparison is exact to fp32 rounding, every int8 value
    (-127..127 after quantisation) appearing in the weights."""
    from kernels.moe import fused
    monkeypatch.setattr(fused, "SMALL_MAX_SLOTS", 0)
    monkeypatch.setattr(fused, "FAST_INT8", True)
    monkeypatch.setitem(fused.PREFILL_TILES, "int8", (16, 32, 32, 4, 3, False, 2))
    monkeypatch.setitem(fused.SILU_UP_TILES, "int8", (16, 16, 32, 4, 3, False, 2))
    args = make(70, H=64, I=40, E=3, k=2, dtype=torch.float32, int8=True, seed=5)  # T > gemv.MAX_TOKENS
    assert set(range(-127, 128)) <= set(args[1].unique().tolist())
    ref = naive.fused_moe(*args)
    for silu_up in (False, True):
        assert rel_err(fused.triton_fused_moe(*args, silu_up=silu_up), ref) <= 1e-5
