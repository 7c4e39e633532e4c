"""Triton paged decode attention (flash-decoding): one query token per sequence against its paged KV cache.

Stage 1, grid (N, KVH, S): program (n, g, s) takes split s of sequence n's context (S contiguous ranges of
ceil(len / S) tokens rounded up to BLOCK_N) for kv head g and ALL the query heads of that GQA group at once, so
each K/V tile is read once per group. It walks BLOCK_N tokens at a time, maps each token to its cache row through
the block table (row = block_tables[n, t // block_size] * block_size + t % block_size, any block size), and keeps
an online softmax in fp32 (exp2 with the scale folded in). With S = 1 it writes the normalised output directly;
otherwise it writes each split's normalised output and log2-sum-exp, and stage 2 (grid (N, H)) merges the splits.

S is picked from static shapes only (batch, kv heads, the longest context the block table can hold or a
`max_seq_len` hint) so the launch is CUDA-graph capturable: no host sync, no data-dependent grid. A split that
gets no tokens (short sequences, seq_len 0 padding rows) reads nothing and has weight 0 in the merge.
"""
import torch
import triton
import triton.language as tl

from kernels.lightning.launch import as_kernel, num_sms

BLOCK_N = 64            # tokens per inner step
PROGRAMS_PER_SM = 4     # stage-1 programs wanted per SM before splitting the context stops paying
MIN_SPLIT_TOKENS = 64   # no split shorter than one BLOCK_N step (H200 sweep: N=1 at 256 tokens 7.8 -> 6.0 µs)
MAX_SPLITS = 256


@triton.jit
def _add(a, b):
    """tl.reduce combiners (tl.sum / tl.max are jit helpers the interpreter cannot run after a plain import)."""
    return a + b


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _split_kernel(q, kc, vc, tables, lens, out, o_part, lse_part, scale_log2,
                  s_qn, s_qh, s_kr, s_kh, s_vr, s_vh, s_tn, s_on, s_oh, SPLITS,
                  G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                  SINGLE: tl.constexpr, DOT_F32: tl.constexpr):
    n, g, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    length = tl.load(lens + n)
    per_split = ((length + SPLITS - 1) // SPLITS + BLOCK_N - 1) // BLOCK_N * BLOCK_N
    start = s * per_split
    end = tl.minimum(start + per_split, length)
    o_g, o_d = tl.arange(0, GP), tl.arange(0, D)
    m_g = o_g < G
    heads = g * G + o_g
    b_q = tl.load(q + n.to(tl.int64) * s_qn + heads[:, None] * s_qh + o_d[None, :], mask=m_g[:, None], other=0.0)
    b_q = b_q.to(tl.float32) if DOT_F32 else b_q.to(kc.dtype.element_ty)
    m_i = tl.full([GP], float("-inf"), tl.float32)
    l_i = tl.full([GP], 0.0, tl.float32)
    acc = tl.full([GP, D], 0.0, tl.float32)
    for t0 in range(start, end, BLOCK_N):
        tok = t0 + tl.arange(0, BLOCK_N)
        valid = tok < end
        page = tl.load(tables + n.to(tl.int64) * s_tn + tok // PAGE, mask=valid, other=0)
        row = page.to(tl.int64) * PAGE + tok % PAGE
        b_k = tl.load(kc + row[:, None] * s_kr + g * s_kh + o_d[None, :], mask=valid[:, None], other=0.0)
        b_v = tl.load(vc + row[:, None] * s_vr + g * s_vh + o_d[None, :], mask=valid[:, None], other=0.0)
        if DOT_F32:
            b_s = tl.dot(b_q, tl.trans(b_k.to(tl.float32)), input_precision="ieee")
        else:
            b_s = tl.dot(b_q, tl.trans(b_k))
        b_s = tl.where(valid[None, :], b_s * scale_log2, float("-inf"))
        m_new = tl.maximum(m_i, tl.reduce(b_s, 1, _max))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(b_s - m_new[:, None])
        l_i = l_i * alpha + tl.reduce(p, 1, _add)
        if DOT_F32:
            acc = acc * alpha[:, None] + tl.dot(p, b_v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(b_v.dtype), b_v)
        m_i = m_new
    o = tl.where(l_i[:, None] > 0, acc / tl.where(l_i > 0, l_i, 1.0)[:, None], 0.0)
    if SINGLE:
        p_out = out + n.to(tl.int64) * s_on + heads[:, None] * s_oh + o_d[None, :]
        tl.store(p_out, o.to(out.dtype.element_ty), mask=m_g[:, None])
    else:
        part = (n.to(tl.int64) * (G * tl.num_programs(1)) + heads) * SPLITS + s  # [N, H, S] flattened
        tl.store(o_part + part[:, None] * D + o_d[None, :], o, mask=m_g[:, None])
        lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("-inf"))  # empty split: -inf
        tl.store(lse_part + part, lse, mask=m_g)


@triton.jit
def _combine_kernel(out, o_part, lse_part, s_on, s_oh, SPLITS, H: tl.constexpr, D: tl.constexpr,
                    SP: tl.constexpr):
    n, h = tl.program_id(0), tl.program_id(1)
    o_s, o_d = tl.arange(0, SP), tl.arange(0, D)
    m_s = o_s < SPLITS
    part = (n.to(tl.int64) * H + h) * SPLITS + o_s
    lse = tl.load(lse_part + part, mask=m_s, other=float("-inf"))
    top = tl.reduce(lse, 0, _max)
    w = tl.exp2(lse - tl.where(top == float("-inf"), 0.0, top))
    b_o = tl.load(o_part + part[:, None] * D + o_d[None, :], mask=m_s[:, None], other=0.0)
    num = tl.reduce(w[:, None] * b_o, 0, _add)
    den = tl.reduce(w, 0, _add)
    o = tl.where(den > 0, num / tl.where(den > 0, den, 1.0), 0.0)
    tl.store(out + n.to(tl.int64) * s_on + h * s_oh + o_d, o.to(out.dtype.element_ty))


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_context: int, device) -> int:
    """Context splits from static shapes: none when (sequence, kv head) programs already fill the GPU twice over,
    else enough for PROGRAMS_PER_SM per SM, none shorter than MIN_SPLIT_TOKENS (tuned on an H200)."""
    programs, sms = max(1, num_seqs * num_kv_heads), num_sms(device)
    if programs >= 2 * sms:
        return 1
    wanted = -(-PROGRAMS_PER_SM * sms // programs)
    by_length = -(-max(1, max_context) // MIN_SPLIT_TOKENS)
    return max(1, min(wanted, by_length, MAX_SPLITS))


def triton_paged_decode_attention(q, k_cache, v_cache, block_tables, seq_lens, block_size, scale, num_splits,
                                  out, block_n=BLOCK_N, num_warps=4, num_stages=2):
    """Launch the kernels (arguments validated by kernels.attention.paged_decode_attention)."""
    N, H, D = q.shape
    KVH = k_cache.shape[1]
    G = H // KVH
    device = q.device
    interp = device.type == "cpu"
    dot_f32 = interp or torch.float32 in (q.dtype, k_cache.dtype) or q.dtype != k_cache.dtype
    final = out if not interp or out.dtype == torch.float32 else torch.empty(N, H, D, device=device)
    common = dict(num_warps=num_warps) if interp else dict(num_warps=num_warps, num_stages=num_stages)
    if num_splits > 1:
        o_part = torch.empty(N, H, num_splits, D, dtype=torch.float32, device=device)
        lse_part = torch.empty(N, H, num_splits, dtype=torch.float32, device=device)
    else:
        o_part = lse_part = final
    as_kernel(_split_kernel, device)[(N, KVH, num_splits)](
        q, k_cache, v_cache, block_tables, seq_lens, final, o_part, lse_part, scale * 1.4426950408889634,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1),
        block_tables.stride(0), final.stride(0), final.stride(1), num_splits, G=G,
        GP=max(16, triton.next_power_of_2(G)), D=D,
        PAGE=block_size, BLOCK_N=block_n, SINGLE=num_splits == 1, DOT_F32=dot_f32, **common)
    if num_splits > 1:
        as_kernel(_combine_kernel, device)[(N, H)](final, o_part, lse_part, final.stride(0), final.stride(1),
                                                   num_splits, H=H, D=D, SP=triton.next_power_of_2(num_splits))
    if final is not out:
        out.copy_(final)  # the interpreter truncates fp32 -> bf16; torch rounds to nearest
    return out
