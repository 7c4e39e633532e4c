"""Triton kernels of the chunked lightning prefill (launched by chunk.py) over packed variable-length sequences.

Three launches, each reading its inputs once (see bench/NOTES_kernels.md for the byte count):
1. `_delta_kernel`, one program per (chunk of CHUNK tokens, head, V slice): the chunk's own state increment
   dS = sum_j exp(-s(m-1-j)) k_j^T v_j, written fp32 into `buf`.
2. `_scan_kernel`, one program per (sequence, head, K rows): S_{c+1} = exp(-s m_c) S_c + dS_c, replacing each dS_c
   in `buf` by the state entering chunk c and writing the final state.
3. `_output_kernel`, one program per (chunk, head, V slice): the exact block form with blocks of BT tokens, starting
   from the chunk's entering state held in registers. O = diag(q_decay) Q S + (Q K^T * D) V.
Dot operands that are fp32 values (S, P = QK^T*D, V*k_decay) meet the tensor cores as fp16 by default for bf16
inputs (S and P scaled by powers of two into range): 11 mantissa bits, output error at the bf16-rounding floor.
OPERANDS (chunk.py) lists the others ("split": bf16 hi + lo, ~fp32; "bf16": fastest, ~1.7e-3 on SiLU data but ~3e-3 on
zero-mean states). fp32 inputs use tf32x3 on the GPU and exact fp32 in the interpreter. Decay is computed with exp2.
H100 timings and choices: bench/README.md, bench/NOTES_kernels.md.
"""
import triton
import triton.language as tl


@triton.jit
def _mm(a, b, acc, IEEE: tl.constexpr, INTERP: tl.constexpr, F32P: tl.constexpr):
    """acc + a @ b; IEEE fp32 for fp32 operands. The interpreter multiplies bf16 bit patterns as integers
    (Triton 3.9), so there the operands go to fp32 first: exact for bf16 values. No early returns in these helpers:
    Triton 3.6 keeps compiling the statements after a `return` inside a constexpr `if`."""
    if INTERP:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif IEEE:
        acc = tl.dot(a, b, acc, input_precision=F32P)
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _bf16(x, INTERP: tl.constexpr):
    """fp32 -> bf16, rounding to nearest even. The GPU converts that way; Triton 3.9's interpreter truncates (also
    when asked for "rtne"), so there the rounding is done on the bits first."""
    if INTERP:
        bits = x.to(tl.uint32, bitcast=True)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        x = bits.to(tl.float32, bitcast=True)
    return x.to(tl.bfloat16)


@triton.jit
def _dot_a32(a, b, acc, MODE: tl.constexpr, IEEE: tl.constexpr, INTERP: tl.constexpr, F32P: tl.constexpr):
    """acc + a @ b with a fp32, b bf16 (fp32 inputs take the IEEE path). MODE 0: one bf16 product; 1: bf16 hi + lo of a
    (~16 mantissa bits); 2: one fp16 product (11 bits; the caller keeps a within fp16 range); 3: one tf32 product
    (11 bits, fp32 range)."""
    if IEEE:
        acc = _mm(a, b, acc, IEEE, INTERP, F32P)
    elif MODE == 3:
        acc = _mm(a, b.to(tl.float32), acc, True, INTERP, "tf32")
    elif MODE == 2:
        acc = _mm(a.to(tl.float16), b.to(tl.float16), acc, IEEE, INTERP, F32P)
    else:
        hi = _bf16(a, INTERP)
        acc = _mm(hi, b, acc, IEEE, INTERP, F32P)
        if MODE == 1:
            acc = _mm(_bf16(a - hi.to(tl.float32), INTERP), b, acc, IEEE, INTERP, F32P)
    return acc


@triton.jit
def _dot_b32(a, b, acc, MODE: tl.constexpr, IEEE: tl.constexpr, INTERP: tl.constexpr, F32P: tl.constexpr):
    """acc + a @ b with b fp32, a in the input dtype; MODE as in _dot_a32."""
    if IEEE:
        acc = _mm(a, b, acc, IEEE, INTERP, F32P)
    elif MODE == 3:
        acc = _mm(a.to(tl.float32), b, acc, True, INTERP, "tf32")
    elif MODE == 2:
        acc = _mm(a.to(tl.float16), b.to(tl.float16), acc, IEEE, INTERP, F32P)
    else:
        hi = _bf16(b, INTERP)
        acc = _mm(a, hi, acc, IEEE, INTERP, F32P)
        if MODE == 1:
            acc = _mm(a, _bf16(b - hi.to(tl.float32), INTERP), acc, IEEE, INTERP, F32P)
    return acc


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _q_state(b_q, state, BT: tl.constexpr, BV: tl.constexpr, MODE: tl.constexpr, IEEE: tl.constexpr,
             INTERP: tl.constexpr, F32P: tl.constexpr):
    """Q S for an fp32 state; MODE 2 scales S by a power of two so its largest entry lands near 2^14 in fp16."""
    zeros = tl.full([BT, BV], 0.0, tl.float32)
    if MODE == 2 and not IEEE:
        top = tl.reduce(tl.reduce(tl.abs(state), 1, _max), 0, _max)
        e = tl.ceil(tl.log2(top + 1e-30)) - 14.0
        out = _dot_b32(b_q, state * tl.exp2(-e), zeros, 2, IEEE, INTERP, F32P) * tl.exp2(e)
    else:
        out = _dot_b32(b_q, state, zeros, MODE, IEEE, INTERP, F32P)
    return out


@triton.jit
def _locate(p, chunk_seq, chunk_off, cu_seqlens, T, CHUNK, VARLEN: tl.constexpr):
    """Program p's chunk: (first token, number of tokens); the count is <= 0 for spare programs."""
    if VARLEN:
        n = tl.load(chunk_seq + p)
        c = p - tl.load(chunk_off + n)
        start = tl.load(cu_seqlens + n) + c * CHUNK
        m = tl.minimum(CHUNK, tl.load(cu_seqlens + n + 1) - start)
    else:
        start = p * CHUNK
        m = tl.minimum(CHUNK, T - start)
    return start, m


@triton.jit
def _delta_kernel(k, v, slopes, buf, chunk_seq, chunk_off, cu_seqlens, T, s_kt, s_kh, s_vt, s_vh,
                  H: tl.constexpr, D: tl.constexpr, CHUNK, BT: tl.constexpr, BV: tl.constexpr,
                  VARLEN: tl.constexpr, IEEE: tl.constexpr, SPLIT_KV: tl.constexpr, INTERP: tl.constexpr,
                  F32P: tl.constexpr):
    i_v, p, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, m = _locate(p, chunk_seq, chunk_off, cu_seqlens, T, CHUNK, VARLEN)
    if m <= 0:
        return
    slope = tl.load(slopes + h) * 1.4426950408889634
    o_t, o_d, o_v = tl.arange(0, BT), tl.arange(0, D), i_v * BV + tl.arange(0, BV)
    p_k = k + start.to(tl.int64) * s_kt + h * s_kh
    p_v = v + start.to(tl.int64) * s_vt + h * s_vh
    acc = tl.full([D, BV], 0.0, tl.float32)
    for t0 in range(0, m, BT):
        rows = t0 + o_t
        m_r = rows < m
        b_k = tl.load(p_k + rows[:, None].to(tl.int64) * s_kt + o_d[None, :], mask=m_r[:, None], other=0.0)
        b_v = tl.load(p_v + rows[:, None].to(tl.int64) * s_vt + o_v[None, :], mask=m_r[:, None], other=0.0)
        k_decay = tl.where(m_r, tl.exp2(-slope * (m - 1 - rows).to(tl.float32)), 0.0)
        acc = _dot_b32(tl.trans(b_k), b_v.to(tl.float32) * k_decay[:, None], acc, SPLIT_KV, IEEE, INTERP, F32P)
    p_buf = buf + (p * H + h).to(tl.int64) * D * D + o_d[:, None] * D + o_v[None, :]
    tl.store(p_buf, acc)


@triton.jit
def _scan_kernel(buf, init, final, slopes, chunk_off, cu_seqlens, T, H: tl.constexpr, D: tl.constexpr,
                 CHUNK, BK: tl.constexpr, VARLEN: tl.constexpr, HAS_INIT: tl.constexpr):
    n, h, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if VARLEN:
        length = tl.load(cu_seqlens + n + 1) - tl.load(cu_seqlens + n)
        base = tl.load(chunk_off + n)
    else:
        length = T
        base = 0
    slope = tl.load(slopes + h) * 1.4426950408889634
    o_k, o_d = i_k * BK + tl.arange(0, BK), tl.arange(0, D)
    o_tile = o_k[:, None] * D + o_d[None, :]
    o_state = (n * H + h).to(tl.int64) * D * D + o_tile
    if HAS_INIT:
        state = tl.load(init + o_state)
    else:
        state = tl.full([BK, D], 0.0, tl.float32)
    n_chunks = (length + CHUNK - 1) // CHUNK
    p_buf = buf + (base * H + h).to(tl.int64) * D * D + o_tile
    step = H * D * D
    # the loop carries only arithmetic: loads run two chunks ahead so each step does not wait a memory round trip
    ahead = o_tile * 0 + n_chunks  # chunks left, as a tile (a scalar mask trips the interpreter)
    next0 = tl.load(p_buf, mask=ahead > 0, other=0.0)
    next1 = tl.load(p_buf + step, mask=ahead > 1, other=0.0)
    for c in range(0, n_chunks):
        next2 = tl.load(p_buf + 2 * step, mask=ahead > c + 2, other=0.0)
        tl.store(p_buf, state)
        m = tl.minimum(CHUNK, length - c * CHUNK)
        state = state * tl.exp2(-slope * m.to(tl.float32)) + next0
        next0, next1 = next1, next2
        p_buf += step
    tl.store(final + o_state, state)


@triton.jit
def _output_kernel(q, k, v, o, slopes, buf, chunk_seq, chunk_off, cu_seqlens, T, s_qt, s_qh, s_kt, s_kh, s_vt, s_vh,
                   H: tl.constexpr, D: tl.constexpr, CHUNK, BT: tl.constexpr, BV: tl.constexpr,
                   VARLEN: tl.constexpr, IEEE: tl.constexpr, SPLIT_S: tl.constexpr, SPLIT_KV: tl.constexpr,
                   SPLIT_P: tl.constexpr, INTERP: tl.constexpr, F32P: tl.constexpr):
    i_v, p, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, m = _locate(p, chunk_seq, chunk_off, cu_seqlens, T, CHUNK, VARLEN)
    if m <= 0:
        return
    slope = tl.load(slopes + h) * 1.4426950408889634
    o_t, o_d, o_v = tl.arange(0, BT), tl.arange(0, D), i_v * BV + tl.arange(0, BV)
    state = tl.load(buf + (p * H + h).to(tl.int64) * D * D + o_d[:, None] * D + o_v[None, :])
    centered = (o_t - BT // 2).to(tl.float32)  # exp(-s(i-j)) = row_scale_i * col_scale_j, exponents within +-85
    row_scale, col_scale = tl.exp2(-slope * centered), tl.exp2(slope * centered)
    causal = o_t[:, None] >= o_t[None, :]
    q_decay = tl.exp2(-slope * (o_t + 1).to(tl.float32))
    k_decay = tl.exp2(-slope * (BT - 1 - o_t).to(tl.float32))
    t64 = start.to(tl.int64)
    for t0 in range(0, m, BT):
        rows = t0 + o_t
        m_r = rows < m
        r64 = (t64 + rows)[:, None].to(tl.int64)
        b_q = tl.load(q + r64 * s_qt + h * s_qh + o_d[None, :], mask=m_r[:, None], other=0.0)
        b_k = tl.load(k + r64 * s_kt + h * s_kh + o_d[None, :], mask=m_r[:, None], other=0.0)
        b_v = tl.load(v + r64 * s_vt + h * s_vh + o_v[None, :], mask=m_r[:, None], other=0.0)
        scores = _mm(b_q, tl.trans(b_k), tl.full([BT, BT], 0.0, tl.float32), IEEE, INTERP, F32P)
        scores = tl.where(causal, scores * row_scale[:, None] * col_scale[None, :], 0.0)
        acc = _q_state(b_q, state, BT, BV, SPLIT_S, IEEE, INTERP, F32P) * q_decay[:, None]
        if SPLIT_P == 2:  # P V in fp16 with P scaled by 2^-8: no overflow below |P| = 2^24
            acc = _dot_a32(scores * 0.00390625, b_v, acc * 0.00390625, 2, IEEE, INTERP, F32P) * 256.0
        else:
            acc = _dot_a32(scores, b_v, acc, SPLIT_P, IEEE, INTERP, F32P)
        tl.store(o + r64 * (H * D) + h * D + o_v[None, :], acc.to(o.dtype.element_ty), mask=m_r[:, None])
        if t0 + BT < m:
            state = _dot_b32(tl.trans(b_k), b_v.to(tl.float32) * k_decay[:, None], state * tl.exp2(-slope * BT),
                             SPLIT_KV, IEEE, INTERP, F32P)
