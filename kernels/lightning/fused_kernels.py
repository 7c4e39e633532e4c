"""Triton kernel of the fused lightning prefill (launched by fused.py): one pass, no chunk states in memory.

`_fused_kernel`, one program per (V slice, sequence, head), walks its whole sequence in blocks of BT tokens, holding
its [D, BV] slice of the state in registers from the initial state to the final one (written at the end):
    O_b = diag(q_decay) Q_b S + (Q_b K_b^T * Dmask) V_b ;   S <- exp(-s m_b) S + (K_b * k_decay)^T V_b
(m_b = tokens in the block; the last block may be partial). fused.py may cut sequences into segments, one launch
each, the state passing through `final` (read back as `init`): programs of one head then stay within a segment of
each other, so the V slices' shared q, k reads keep hitting L2. Against chunk.py's three launches this saves the delta
pass (k, v read a second time) and the scan, at the price of parallelism: N * H * D / BV programs, so it pays only
when that fills the GPU (fused.py falls back to the chunked form when it does not).
The state-dependent products are issued before the intra-block ones that do not need them. Dot operand modes are
chunk_kernels' (_dot_a32, _dot_b32, _q_state); the "-s" operand sets keep q, k, v in bf16 (no conversions, no extra
shared-memory copies) and only the state's product precise, which carries arbitrary initial states.
"""
import triton
import triton.language as tl

from .chunk_kernels import _dot_a32, _dot_b32, _mm, _q_state


@triton.jit
def _fused_kernel(q, k, v, o, slopes, init, final, cu_seqlens, T, seg_lo, seg_len, s_qt, s_qh, s_kt, s_kh, s_vt,
                  s_vh, H: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BV: tl.constexpr, VARLEN: tl.constexpr,
                  HAS_INIT: tl.constexpr, IEEE: tl.constexpr, SPLIT_S: tl.constexpr, SPLIT_KV: tl.constexpr,
                  SPLIT_P: tl.constexpr, INTERP: tl.constexpr, F32P: tl.constexpr):
    i_v, n, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    if VARLEN:
        start = tl.load(cu_seqlens + n)
        length = tl.load(cu_seqlens + n + 1) - start
    else:
        start = n * 0
        length = T
    if (seg_lo > 0) & (length <= seg_lo):  # a later segment of a sequence already done: its final state is written
        return
    start += seg_lo  # this launch covers tokens [seg_lo, seg_lo + seg_len) of every sequence
    m = tl.minimum(length - seg_lo, seg_len)
    slope = tl.load(slopes + h) * 1.4426950408889634
    o_t, o_d, o_v = tl.arange(0, BT), tl.arange(0, D), i_v * BV + tl.arange(0, BV)
    o_state = (n * H + h).to(tl.int64) * D * D + o_d[:, None] * D + o_v[None, :]
    if HAS_INIT:
        state = tl.load(init + o_state)
    else:
        state = tl.full([D, BV], 0.0, tl.float32)
    centered = (o_t - BT // 2).to(tl.float32)  # exp(-s(i-j)) = row_scale_i * col_scale_j, exponents within +-85
    row_scale, col_scale = tl.exp2(-slope * centered), tl.exp2(slope * centered)
    causal = o_t[:, None] >= o_t[None, :]
    q_decay = tl.exp2(-slope * (o_t + 1).to(tl.float32))
    t64 = start.to(tl.int64)
    for t0 in range(0, m, BT):
        rows = t0 + o_t
        m_r = rows < m
        r64 = (t64 + rows)[:, None].to(tl.int64)
        b_q = tl.load(q + r64 * s_qt + h * s_qh + o_d[None, :], mask=m_r[:, None], other=0.0)
        b_k = tl.load(k + r64 * s_kt + h * s_kh + o_d[None, :], mask=m_r[:, None], other=0.0)
        b_v = tl.load(v + r64 * s_vt + h * s_vh + o_v[None, :], mask=m_r[:, None], other=0.0)
        acc = _q_state(b_q, state, BT, BV, SPLIT_S, IEEE, INTERP, F32P) * q_decay[:, None]
        scores = _mm(b_q, tl.trans(b_k), tl.full([BT, BT], 0.0, tl.float32), IEEE, INTERP, F32P)
        scores = tl.where(causal, scores * row_scale[:, None] * col_scale[None, :], 0.0)
        if SPLIT_P == 2:  # P V in fp16 with P scaled by 2^-8: no overflow below |P| = 2^24
            acc = _dot_a32(scores * 0.00390625, b_v, acc * 0.00390625, 2, IEEE, INTERP, F32P) * 256.0
        else:
            acc = _dot_a32(scores, b_v, acc, SPLIT_P, IEEE, INTERP, F32P)
        tl.store(o + r64 * (H * D) + h * D + o_v[None, :], acc.to(o.dtype.element_ty), mask=m_r[:, None])
        m_b = tl.minimum(m - t0, BT)  # tokens in this block
        k_decay = tl.where(m_r, tl.exp2(-slope * (m_b - 1 - o_t).to(tl.float32)), 0.0)
        state = _dot_b32(tl.trans(b_k), b_v.to(tl.float32) * k_decay[:, None],
                         state * tl.exp2(-slope * m_b.to(tl.float32)), SPLIT_KV, IEEE, INTERP, F32P)
    tl.store(final + o_state, state)
