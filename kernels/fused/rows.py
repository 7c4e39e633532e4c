"""Row-wise Triton kernels of the decode path: one program per token row, the row held in registers.

`_add_rms_norm_kernel`: x = alpha*h + beta*y (rounded to the activation dtype, as the engine stores it), then
RMSNorm with fp32 statistics and `weight * x_normed.to(dtype)`. `_gate_norm_kernel`: sigmoid(gate) * RMSNorm(o)
(lightning output, TP1) or, with NORM=False, sigmoid(gate) * (weight * o) plus the fp32 sum of squares (TP>1).
`_rms_scale_kernel`: the TP>1 finish after the all-reduce. ROUND=False (the interpreter, which truncates instead of
rounding) keeps intermediates in fp32.
"""
import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _round(x, dtype: tl.constexpr, ROUND: tl.constexpr):
    """x rounded to `dtype` and widened back (where the engine's module rounds an intermediate)."""
    if ROUND:
        return x.to(dtype).to(tl.float32)
    return x


@triton.jit
def _add_rms_norm_kernel(h, y, w, normed, x_out, alpha, beta, eps, N, BLOCK: tl.constexpr, ROUND: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, BLOCK)
    m = o < N
    dt = x_out.dtype.element_ty
    x = alpha * tl.load(h + t * N + o, mask=m, other=0.0).to(tl.float32) + \
        beta * tl.load(y + t * N + o, mask=m, other=0.0).to(tl.float32)
    tl.store(x_out + t * N + o, x.to(dt), mask=m)
    x = _round(x, dt, ROUND)
    inv = 1.0 / tl.sqrt(tl.reduce(x * x, 0, _add) / N + eps)
    out = tl.load(w + o, mask=m, other=0.0).to(tl.float32) * _round(x * inv, dt, ROUND)
    tl.store(normed + t * N + o, out.to(normed.dtype.element_ty), mask=m)


@triton.jit
def _gate_norm_kernel(o_ptr, g_ptr, w, out, sum_sq, eps, N, s_g, NORM: tl.constexpr, BLOCK: tl.constexpr,
                      ROUND: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, BLOCK)
    m = o < N
    dt = out.dtype.element_ty
    x = tl.load(o_ptr + t * N + o, mask=m, other=0.0).to(tl.float32)
    gate = _round(1.0 / (1.0 + tl.exp(-tl.load(g_ptr + t * s_g + o, mask=m, other=0.0).to(tl.float32))), dt, ROUND)
    b_w = tl.load(w + o, mask=m, other=0.0).to(tl.float32)
    ss = tl.reduce(x * x, 0, _add)
    if NORM:
        normed = _round(b_w * _round(x / tl.sqrt(ss / N + eps), dt, ROUND), dt, ROUND)
    else:
        normed = _round(b_w * x, dt, ROUND)
        tl.store(sum_sq + t, ss)
    tl.store(out + t * N + o, (gate * normed).to(dt), mask=m)


@triton.jit
def _rms_scale_kernel(red, out, inner, eps, N, BLOCK: tl.constexpr):
    """red [T, N + 1] fp32 (partial out_proj sums, then the sum of squares) -> out [T, N]."""
    t = tl.program_id(0).to(tl.int64)
    o = tl.arange(0, BLOCK)
    m = o < N
    inv = 1.0 / tl.sqrt(tl.load(red + t * (N + 1) + N) / inner + eps)
    x = tl.load(red + t * (N + 1) + o, mask=m, other=0.0)
    tl.store(out + t * N + o, (x * inv).to(out.dtype.element_ty), mask=m)
