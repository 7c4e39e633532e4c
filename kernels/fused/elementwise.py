"""SiLU(gate) * up and the router's softmax / top-k / renormalise, as Triton kernels.

`_silu_mul_kernel`, grid (T, I / BLOCK): gate_up [T, 2I] (gate columns first) -> [T, I], fp32 math, one rounding.
`_router_kernel`, one program per token: fp32 softmax over the E logits, k rounds of argmax (ties: lowest expert
id), weights renormalised over the chosen k, then cast (engine/layers/moe.py's route after its gate matmul).
"""
import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _min(a, b):
    return tl.minimum(a, b)


@triton.jit
def _silu_mul_kernel(gu, out, N, s_gu, BLOCK: tl.constexpr):
    t, i = tl.program_id(0).to(tl.int64), tl.program_id(1)
    o = i * BLOCK + tl.arange(0, BLOCK)
    m = o < N
    g = tl.load(gu + t * s_gu + o, mask=m, other=0.0).to(tl.float32)
    u = tl.load(gu + t * s_gu + N + o, mask=m, other=0.0).to(tl.float32)
    tl.store(out + t * N + o, (g / (1.0 + tl.exp(-g)) * u).to(out.dtype.element_ty), mask=m)


@triton.jit
def _router_kernel(logits, weights, ids, E, s_l, TOP_K: tl.constexpr, EP: tl.constexpr, KP: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    o_e, o_k = tl.arange(0, EP), tl.arange(0, KP)
    x = tl.load(logits + t * s_l + o_e, mask=o_e < E, other=float("-inf")).to(tl.float32)
    p = tl.exp(x - tl.reduce(x, 0, _max))
    p = p / tl.reduce(p, 0, _add)
    p = tl.where(o_e < E, p, -1.0)
    chosen_w = tl.full([KP], 0.0, tl.float32)
    chosen_i = tl.full([KP], 0, tl.int64)
    for j in range(TOP_K):
        best = tl.reduce(p, 0, _max)
        idx = tl.reduce(tl.where(p == best, o_e, EP), 0, _min)
        chosen_w = tl.where(o_k == j, best, chosen_w)
        chosen_i = tl.where(o_k == j, idx.to(tl.int64), chosen_i)
        p = tl.where(o_e == idx, -2.0, p)
    chosen_w = chosen_w / tl.reduce(chosen_w, 0, _add)
    tl.store(weights + t * TOP_K + o_k, chosen_w.to(weights.dtype.element_ty), mask=o_k < TOP_K)
    tl.store(ids + t * TOP_K + o_k, chosen_i, mask=o_k < TOP_K)
