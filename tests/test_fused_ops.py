"""Fused decode-path ops (kernels/fused) against the PyTorch references written as the engine computes them,
through Triton's interpreter: residual + RMSNorm, SiLU*up, router softmax/top-k/renormalise, the lightning output
norm + sigmoid gate (TP1, and the TP>1 split checked by summing two "ranks" by hand), and the bf16-weight LM head.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from kernels import fused  # noqa: E402
from kernels.fused import naive  # noqa: E402
from kernels.fused.lm_head import split_bf16  # noqa: E402

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@DTYPES
@pytest.mark.parametrize("N", [96, 1000])
def test_add_rms_norm(N, dtype):
    h, y = randn(3, N, dtype=dtype, seed=1), randn(3, N, dtype=dtype, seed=2)
    w = (1 + 0.1 * randn(N, seed=3)).to(dtype)
    normed, x = fused.add_rms_norm(h, y, w, 1e-5, alpha=1.5, beta=0.7)
    ref_normed, ref_x = naive.add_rms_norm(h, y, w, 1e-5, alpha=1.5, beta=0.7)
    assert normed.dtype == x.dtype == dtype
    assert rel_err(x, ref_x) <= TOL[dtype] and rel_err(normed, ref_normed) <= TOL[dtype]


@DTYPES
def test_silu_mul(dtype):
    gu = randn(5, 2 * 1500, dtype=dtype, seed=4)  # more than one column block
    out = fused.silu_mul(gu)
    assert out.shape == (5, 1500) and rel_err(out, naive.silu_mul(gu)) <= TOL[dtype]


@pytest.mark.parametrize("E,k", [(32, 2), (6, 3), (5, 1)])
def test_router_picks_the_same_experts_and_weights(E, k):
    logits = randn(9, E, seed=E) * 3
    weights, ids = fused.router_topk(logits, k, torch.bfloat16)
    ref_w, ref_ids = naive.router_topk(logits, k, torch.bfloat16)
    assert ids.dtype == torch.int64 and torch.equal(ids, ref_ids)
    assert weights.dtype == torch.bfloat16 and rel_err(weights, ref_w) <= 1e-2
    w32, _ = fused.router_topk(logits, k, torch.float32)
    assert rel_err(w32, naive.router_topk(logits, k, torch.float32)[0]) <= 1e-6


@DTYPES
def test_lightning_gate_norm(dtype):
    o, g = randn(4, 512, dtype=dtype, seed=5), randn(4, 512, dtype=dtype, seed=6)
    w = (1 + 0.1 * randn(512, seed=7)).to(dtype)
    out = fused.lightning_gate_norm(o, g, w, 1e-6)
    assert rel_err(out, naive.lightning_gate_norm(o, g, w, 1e-6)) <= TOL[dtype]


def test_lightning_tp_split_equals_the_full_norm():
    """Two ranks' partials (identity out_proj), summed as the all-reduce would, give the TP1 result."""
    o, g = randn(3, 256, seed=8), randn(3, 256, seed=9)
    w = 1 + 0.1 * randn(256, seed=10)
    halves = [fused.lightning_gate_partial(o[:, s].contiguous(), g[:, s].contiguous(), w[s])
              for s in (slice(0, 128), slice(128, 256))]
    ref = [naive.lightning_gate_partial(o[:, s], g[:, s], w[s]) for s in (slice(0, 128), slice(128, 256))]
    for (p, ss), (rp, rss) in zip(halves, ref):
        assert rel_err(p, rp) <= 1e-6 and rel_err(ss, rss) <= 1e-6
    reduced = torch.cat([torch.cat([halves[0][0], halves[1][0]], -1), halves[0][1] + halves[1][1]], -1)
    out = fused.rms_scale(reduced, 256, 1e-6, torch.float32)
    assert rel_err(out, naive.lightning_gate_norm(o, g, w, 1e-6)) <= 1e-5


def test_lm_head_split_is_exact_and_matches_fp32():
    h = randn(4, 300, seed=11) * 10
    pieces = split_bf16(h)
    assert pieces.dtype == torch.bfloat16 and torch.equal(pieces.float().sum(0), h)
    w = randn(50, 300, dtype=torch.bfloat16, seed=12)
    out = fused.lm_head_logits(h, w)
    assert out.dtype == torch.float32 and rel_err(out, naive.lm_head_logits(h, w)) <= 1e-6
    ref = (pieces.float() @ w.float().t()).sum(0)  # the CUDA path's arithmetic, done in fp32 on the CPU
    assert rel_err(ref, naive.lm_head_logits(h, w)) <= 1e-6


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="contiguous"):
        fused.add_rms_norm(randn(2, 8), randn(2, 8), randn(9), 1e-5)
    with pytest.raises(ValueError, match="top_k"):
        fused.router_topk(randn(2, 4), 5, torch.float32)
    with pytest.raises(ValueError, match="bf16"):
        fused.lm_head_logits(randn(2, 8), randn(3, 8))
