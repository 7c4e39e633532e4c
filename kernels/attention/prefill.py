"""Triton flash-attention forward for chunked prefill against the paged KV cache (causal, GQA).

q [T, H, D] holds the new queries of N sequences packed by cu_seqlens_q [N+1]; sequence b's queries are the LAST
n_b = cu[b+1] - cu[b] positions of a context of L_b = seq_lens_k[b] tokens whose K/V (the new ones included) sit in
k_cache / v_cache [num_blocks * block_size, KVH, D] at row block_tables[b, j // block_size] * block_size + j % block_size
(engine/cache.py's layout). Query i of sequence b sees keys j <= L_b - n_b + i (lower-right aligned causal mask).

One program per (query head, BLOCK_M queries, sequence); the head is the fastest grid axis so the H / KVH query heads
that read one kv head run side by side and share its K/V tiles through L2. Key tiles left of the diagonal run
without masks; only the BLOCK_M / BLOCK_N tiles that cross it are masked; tiles right of it are never visited.
Scores use exp2 with the log2(e) folded into the scale; fp32 accumulation; P meets V in the input dtype. The query
blocks are visited longest first (the last blocks of a chunk see the most keys).

Variants (VARIANT_FLAGS, picked by `variant=`; VARIANT is the engine's): TMA descriptors for the unmasked K/V tiles
when a cache block holds whole key tiles (a 256-row block holds two 128-row tiles), and for Q / whole output blocks;
warp specialisation of the unmasked loop; the scale folded into the max and one multiply-add; a quarter of the
exponentials computed by polynomial on the FMA pipes. The masked (diagonal) tiles always take the plain path.
"""
import torch
import triton
import triton.language as tl

from kernels.lightning.launch import as_kernel

LOG2E = 1.4426950408889634
# (BLOCK_M, BLOCK_N, num_warps, num_stages) per head_dim on the GPU (D=128 swept on an H200: bench/README.md); the CPU interpreter takes small tiles so short
# test sequences still cross several tiles, partial tiles and the diagonal.
GPU_CONFIG = {128: (128, 128, 8, 3), 64: (128, 64, 4, 3), 32: (128, 64, 4, 3), 16: (64, 64, 4, 3)}
CPU_CONFIG = (16, 8, 1, 1)
# kernel variants (bench/prefill_variants.py times them): "tma" K/V tiles of the unmasked loop through TMA descriptors,
# "tmaq" the Q tile and whole output blocks through TMA, "ws" warp specialisation of the unmasked loop, "fold" the
# softmax scale folded into the row max and one multiply-add, "poly" (with "fold") a quarter of the exponentials by
# polynomial on the FMA pipes. VARIANT is what the engine runs ('' = none of them).
VARIANT_FLAGS = {"tma": "TMA_KV", "tmaq": "TMA_QO", "ws": "WS", "fold": "FOLD", "poly": "POLY"}
VARIANT = ""


@triton.jit
def _max(a, b):
    """tl.reduce's combiner (tl.max / tl.sum live in triton.language.standard, which the interpreter copy of this
    module cannot use when triton was imported before TRITON_INTERPRET was set)."""
    return tl.maximum(a, b)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _key_rows(bt_ptr, j0, L, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
              TILE_IN_BLOCK: tl.constexpr):
    """Cache rows (int64) of keys j0 .. j0 + BLOCK_N - 1, through the sequence's block table."""
    o_n = j0 + tl.arange(0, BLOCK_N)
    if TILE_IN_BLOCK:  # the tile lies inside one cache block: one table entry
        row0 = tl.load(bt_ptr + j0 // BLOCK_SIZE).to(tl.int64) * BLOCK_SIZE + j0 % BLOCK_SIZE
        rows = row0 + tl.arange(0, BLOCK_N)
    elif MASKED:
        rows = tl.load(bt_ptr + o_n // BLOCK_SIZE, mask=o_n < L, other=0).to(tl.int64) * BLOCK_SIZE + o_n % BLOCK_SIZE
    else:
        rows = tl.load(bt_ptr + o_n // BLOCK_SIZE).to(tl.int64) * BLOCK_SIZE + o_n % BLOCK_SIZE
    return rows


@triton.jit
def _load_kv(k_base, v_base, bt_ptr, j0, L, stride_kr, MASKED: tl.constexpr, BLOCK_SIZE: tl.constexpr,
             BLOCK_N: tl.constexpr, D: tl.constexpr, TILE_IN_BLOCK: tl.constexpr):
    """K and V tiles [BLOCK_N, D] of keys j0 .. j0 + BLOCK_N - 1 by pointer loads (zeros past L when MASKED)."""
    rows = _key_rows(bt_ptr, j0, L, BLOCK_SIZE, BLOCK_N, MASKED, TILE_IN_BLOCK)
    o_d = tl.arange(0, D)
    p_k = k_base + rows[:, None] * stride_kr + o_d[None, :]
    p_v = v_base + rows[:, None] * stride_kr + o_d[None, :]
    if MASKED:
        o_n = j0 + tl.arange(0, BLOCK_N)
        k = tl.load(p_k, mask=(o_n < L)[:, None], other=0.0)
        v = tl.load(p_v, mask=(o_n < L)[:, None], other=0.0)
    else:
        k = tl.load(p_k)
        v = tl.load(p_v)
    return k, v


@triton.jit
def _load_kv_tma(kd, vd, bt_ptr, j0, col, BLOCK_SIZE: tl.constexpr):
    """K and V tiles of an unmasked key tile through TMA descriptors over the [rows, KVH * D] cache (the tile lies in
    one cache block, so its rows are contiguous)."""
    row0 = tl.load(bt_ptr + j0 // BLOCK_SIZE) * BLOCK_SIZE + j0 % BLOCK_SIZE
    return kd.load([row0, col]), vd.load([row0, col])


@triton.jit
def _exp2_fma(x):
    """2^x for finite x <= 0 without the special-function unit: x = n + f, n = round(x) by the 1.5 * 2^23 trick,
    |f| <= 1/2; 2^f by its degree-4 Taylor polynomial (relative error < 5e-5); n added to the exponent bits."""
    x = tl.maximum(x, -125.0)
    t = x + 12582912.0
    f = x - (t - 12582912.0)
    p = (((0.009618129 * f + 0.05550411) * f + 0.2402265) * f + 0.6931472) * f + 1.0
    n = t.to(tl.int32, bitcast=True) - 0x4B400000
    return (p.to(tl.int32, bitcast=True) + (n << 23)).to(tl.float32, bitcast=True)


@triton.jit
def _exp2_mixed(x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """exp2 of a [BLOCK_M, BLOCK_N] tile with one column in four (4c + 3) on the FMA pipes: the special-function
    unit's exp2 rate, not the tensor cores, bounds a D=128 tile, so a share moved off it can overlap."""
    a, b = tl.split(tl.reshape(x, (BLOCK_M, BLOCK_N // 4, 2, 2)))  # columns 4c + 2i + j: j = 0 / 1
    b0, b1 = tl.split(b)  # i = 0 / 1
    return tl.reshape(tl.join(tl.exp2(a), tl.join(tl.exp2(b0), _exp2_fma(b1))), (BLOCK_M, BLOCK_N))


@triton.jit
def _tile(q, k, v, acc, m_i, l_i, j0, L, pos, qk_scale, MASKED: tl.constexpr, INTERP: tl.constexpr,
          BLOCK_N: tl.constexpr, FOLD: tl.constexpr, POLY: tl.constexpr = False):
    """One key tile of the online softmax: (acc, m_i, l_i) updated with keys j0 .. j0 + BLOCK_N - 1. FOLD (unmasked
    tiles only) folds the scale into the max and into one multiply-add before exp2 instead of scaling every score;
    POLY (unmasked tiles only) takes a quarter of the exponentials off the special-function unit (_exp2_mixed)."""
    if INTERP:  # the interpreter multiplies bf16 bit patterns as integers (Triton 3.9): go fp32 (exact for bf16)
        s = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    if FOLD and not MASKED:
        m_new = tl.maximum(m_i, tl.reduce(s, 1, _max) * qk_scale)
        if POLY:
            p = _exp2_mixed(s * qk_scale - m_new[:, None], q.shape[0], BLOCK_N)
        else:
            p = tl.exp2(s * qk_scale - m_new[:, None])
    else:
        s = s * qk_scale
        if MASKED:
            o_n = j0 + tl.arange(0, BLOCK_N)
            s = tl.where((o_n[None, :] <= pos[:, None]) & (o_n < L)[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.reduce(s, 1, _max))
        p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.reduce(p, 1, _add)
    acc = acc * alpha[:, None]
    if INTERP:
        acc = tl.dot(p, v.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_new, l_i


@triton.jit
def _prefill_kernel(q_ptr, k_ptr, v_ptr, o_ptr, bt_ptr, cu_ptr, lens_ptr, qd, kd, vd, od, qk_scale, num_m_blocks,
                    stride_qt, stride_qh, stride_ot, stride_oh, stride_kr, stride_kh, stride_bt,
                    GROUP: tl.constexpr, D: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, TILE_IN_BLOCK: tl.constexpr, INTERP: tl.constexpr, TMA_KV: tl.constexpr,
                    TMA_QO: tl.constexpr, WS: tl.constexpr, FOLD: tl.constexpr, POLY: tl.constexpr):
    h, b = tl.program_id(0), tl.program_id(2)
    i_m = num_m_blocks - 1 - tl.program_id(1)  # longest query blocks first
    q_lo = tl.load(cu_ptr + b)
    n = tl.load(cu_ptr + b + 1) - q_lo
    m0 = i_m * BLOCK_M
    if m0 >= n:
        return
    L = tl.load(lens_ptr + b)
    o_m = m0 + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, D)
    m_q = o_m < n
    t = (q_lo + o_m).to(tl.int64)
    if TMA_QO:  # rows past this sequence belong to the next one (or are zero-filled past T): loaded, never stored
        q = qd.load([q_lo + m0, h * D])
    else:
        q = tl.load(q_ptr + t[:, None] * stride_qt + h * stride_qh + o_d[None, :], mask=m_q[:, None], other=0.0)
    pos = L - n + o_m  # absolute position of each query row
    kvh = h // GROUP
    k_base = k_ptr + kvh * stride_kh
    v_base = v_ptr + kvh * stride_kh
    bt = bt_ptr + b.to(tl.int64) * stride_bt
    acc = tl.full((BLOCK_M, D), 0.0, tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.full((BLOCK_M,), 0.0, tl.float32)
    full_hi = (L - n + m0 + 1) // BLOCK_N * BLOCK_N  # keys below this are visible to every row of the block
    for j0 in tl.range(0, full_hi, BLOCK_N, warp_specialize=WS):
        if TMA_KV:
            k, v = _load_kv_tma(kd, vd, bt, j0, kvh * D, BLOCK_SIZE)
        else:
            k, v = _load_kv(k_base, v_base, bt, j0, L, stride_kr, False, BLOCK_SIZE, BLOCK_N, D, TILE_IN_BLOCK)
        acc, m_i, l_i = _tile(q, k, v, acc, m_i, l_i, j0, L, pos, qk_scale, False, INTERP, BLOCK_N, FOLD, POLY)
    diag_hi = tl.minimum(L, L - n + m0 + BLOCK_M)
    for j0 in range(full_hi, diag_hi, BLOCK_N):  # the diagonal (and the context's last, partial tile): masked
        k, v = _load_kv(k_base, v_base, bt, j0, L, stride_kr, True, BLOCK_SIZE, BLOCK_N, D, TILE_IN_BLOCK)
        acc, m_i, l_i = _tile(q, k, v, acc, m_i, l_i, j0, L, pos, qk_scale, True, INTERP, BLOCK_N, False)
    out = (acc / l_i[:, None]).to(o_ptr.dtype.element_ty)
    p_o = o_ptr + t[:, None] * stride_ot + h * stride_oh + o_d[None, :]
    if TMA_QO:
        if m0 + BLOCK_M <= n:  # a whole block of this sequence's rows
            od.store([q_lo + m0, h * D], out)
        else:
            tl.store(p_o, out, mask=m_q[:, None])
    else:
        tl.store(p_o, out, mask=m_q[:, None])


def _check(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens_k, block_size):
    if q.dim() != 3 or k_cache.dim() != 3 or k_cache.shape != v_cache.shape:
        raise ValueError(f"q must be [T, H, D] and k_cache, v_cache equal [rows, KVH, D]; got {tuple(q.shape)}, "
                         f"{tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    H, D = q.shape[1:]
    KVH = k_cache.shape[1]
    if k_cache.shape[2] != D or H % KVH:
        raise ValueError(f"head_dim must match and H={H} be a multiple of KVH={KVH}")
    if D < 16 or D & (D - 1):
        raise ValueError(f"head_dim must be a power of two >= 16, got {D}")
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if cu_seqlens_q.dim() != 1 or seq_lens_k.shape != (cu_seqlens_q.numel() - 1,) or \
            block_tables.dim() != 2 or block_tables.shape[0] != seq_lens_k.numel():
        raise ValueError("cu_seqlens_q must be [N+1], seq_lens_k [N] and block_tables [N, max_blocks]")
    if k_cache.stride(2) != 1 or v_cache.stride() != k_cache.stride() or q.stride(2) != 1:
        raise ValueError("k_cache and v_cache need the same strides and contiguous head_dim (q too)")


def config(head_dim: int, device) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for this head_dim on `device`."""
    return GPU_CONFIG[head_dim] if torch.device(device).type == "cuda" else CPU_CONFIG


def variant_flags(variant: str, q, k_cache, block_size: int, block_n: int) -> dict:
    """The kernel's switches for `variant` ('+'-joined VARIANT_FLAGS names, '' = the plain kernel). TMA needs key
    tiles inside one cache block and a [rows, KVH * D] view of the cache (kv heads packed); without them "tma" falls
    back to pointer loads. "tmaq" likewise needs q and out packed [T, H * D]."""
    names = set(filter(None, variant.split("+")))
    if names - set(VARIANT_FLAGS):
        raise ValueError(f"unknown prefill variant flags {sorted(names - set(VARIANT_FLAGS))}; know {VARIANT_FLAGS}")
    D = q.shape[2]
    flags = {VARIANT_FLAGS[n]: n in names for n in VARIANT_FLAGS}
    flags["FOLD"] |= flags["POLY"]  # the polynomial exponentials live in the folded-scale branch
    flags["TMA_KV"] &= block_size % block_n == 0 and k_cache.stride(1) == D
    flags["TMA_QO"] &= q.stride(1) == D and q.stride(0) == q.shape[1] * D
    return flags


def _descriptors(flags, q, k_cache, v_cache, out, BLOCK_M, BLOCK_N):
    """TMA descriptors (q, k, v, out) the variant uses; the plain tensors stand in for the unused ones. A tensor that
    TMA cannot address (TensorDescriptor's alignment checks) turns its flag off in `flags`: pointer loads instead."""
    from triton.tools.tensor_descriptor import TensorDescriptor
    D = q.shape[2]
    qd, kd, vd, od = q, k_cache, v_cache, out
    try:
        if flags["TMA_KV"]:
            kd, vd = (TensorDescriptor(c, [c.shape[0], c.shape[1] * D], [c.stride(0), 1], [BLOCK_N, D])
                      for c in (k_cache, v_cache))
    except AssertionError:
        flags["TMA_KV"], kd, vd = False, k_cache, v_cache
    try:
        if flags["TMA_QO"]:
            qd, od = (TensorDescriptor(t, [t.shape[0], t.shape[1] * D], [t.stride(0), 1], [BLOCK_M, D])
                      for t in (q, out))
    except AssertionError:
        flags["TMA_QO"], qd, od = False, q, out
    return qd, kd, vd, od


def paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens_k, block_size, scale,
                            max_seqlen_q=None, out=None, tiles=None, variant=None):
    """Causal attention of packed chunk queries over their paged contexts; returns out [T, H, D] in q.dtype.

    q, k_cache, v_cache bf16/fp16 (fp32 too: the CPU tests); block_tables [N, max_blocks], cu_seqlens_q [N+1] and
    seq_lens_k [N] int32 on q's device; seq_lens_k[b] >= cu[b+1] - cu[b]. `max_seqlen_q` (a host int) avoids a
    device sync; `tiles` overrides config(); `variant` (default VARIANT) picks kernel switches (variant_flags)."""
    _check(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens_k, block_size)
    T, H, D = q.shape
    out = torch.empty_like(q) if out is None else out
    N = seq_lens_k.numel()
    if T == 0 or N == 0:
        return out
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    BLOCK_M, BLOCK_N, warps, stages = tiles or config(D, q.device)
    flags = variant_flags(VARIANT if variant is None else variant, q, k_cache, block_size, BLOCK_N)
    flags["TMA_QO"] &= out.stride() == q.stride()
    descriptors = _descriptors(flags, q, k_cache, v_cache, out, BLOCK_M, BLOCK_N)
    num_m_blocks = triton.cdiv(max_seqlen_q, BLOCK_M)
    grid = (H, num_m_blocks, N)
    as_kernel(_prefill_kernel, q.device)[grid](
        q, k_cache, v_cache, out, block_tables, cu_seqlens_q, seq_lens_k, *descriptors, float(scale) * LOG2E,
        num_m_blocks,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), k_cache.stride(0), k_cache.stride(1),
        block_tables.stride(0), GROUP=H // k_cache.shape[1], D=D, BLOCK_SIZE=block_size, BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N, TILE_IN_BLOCK=block_size % BLOCK_N == 0, INTERP=q.device.type == "cpu", num_warps=warps,
        num_stages=stages, **flags)
    return out
