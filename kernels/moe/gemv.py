"""Decode-sized fused MoE (T <= 64 tokens): weight-streaming kernels over all selected experts, graph-capturable.

1. `_route_kernel` (one program): the T*k (token, expert) slots grouped by expert, each expert's run padded to
   BLOCK_M, as a table of blocks (slot ids, expert of each block; -1 = unused block). Replaces the argsort /
   bincount / searchsorted chain (one launch, no host sync). At T == 1 every slot is a block of its own: no launch.
2. `_gate_up_kernel`, grid (blocks, I / BLOCK_N, split): for the slots of one expert, the w1 and w3 rows of the same
   BLOCK_N intermediate columns are streamed once (int8 converted in registers, exact in bf16), dotted with the
   tokens' rows, scaled by the fp32 row scales, and SiLU(gate) * up is written: h [T*k, I] in the activation dtype,
   never the [T*k, 2I] fp32 gate/up. With split-K (few output columns, e.g. at high TP) partial sums go to a small
   fp32 buffer and `_silu_mul_kernel` finishes them.
3. `_down_kernel`, same grid over H rows of w2: y_part [split, T*k, H] fp32 = routing weight * scale * (w2 @ h).
4. `_sum_slots_kernel`: out [T, H] = sum over splits and the k slots of each token, one rounding to x.dtype.
Every launch's grid depends on static shapes only (T, k, E, sizes); unused blocks exit before reading weights.
"""
import torch
import triton
import triton.language as tl

from kernels.lightning.launch import as_kernel, num_sms

MAX_TOKENS = 64          # decode-sized batches take this path
BLOCK_M = 16             # slots per block (tl.dot's smallest M)
PROGRAMS_PER_SM = 8      # split K until about this many programs stream weights per SM
MIN_SPLIT_K = 512        # ... but keep at least this much of K per split
CONFIG = dict(BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4)  # tuned on an H200 (bench/decode_kernels.py)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _route_kernel(ids_ptr, sorted_ptr, block_expert_ptr, S, E, BM: tl.constexpr, SP: tl.constexpr,
                  EP: tl.constexpr, NB: tl.constexpr, NBP: tl.constexpr):
    o_s, o_e, o_b = tl.arange(0, SP), tl.arange(0, EP), tl.arange(0, NBP)
    ids = tl.load(ids_ptr + o_s, mask=o_s < S, other=-1).to(tl.int32)
    onehot = (ids[:, None] == o_e[None, :]).to(tl.int32)                        # [SP, EP]
    counts = tl.reduce(onehot, 0, _add)
    blocks = (counts + BM - 1) // BM
    first = tl.reduce(tl.where(o_e[None, :] < o_e[:, None], blocks[None, :], 0), 1, _add)  # exclusive cumsum
    same_before = (ids[None, :] == ids[:, None]) & (o_s[None, :] < o_s[:, None])
    rank = tl.reduce(same_before.to(tl.int32), 1, _add)
    pos = tl.reduce(onehot * first[None, :], 1, _add) * BM + rank
    o_p = tl.arange(0, NBP * BM)
    tl.store(sorted_ptr + o_p, tl.full([NBP * BM], S, tl.int32), mask=o_p < NB * BM)
    tl.debug_barrier()
    tl.store(sorted_ptr + pos, o_s, mask=o_s < S)
    inside = (o_b[:, None] >= first[None, :]) & (o_b[:, None] < (first + blocks)[None, :])  # [NBP, EP]
    expert = tl.reduce(tl.where(inside, o_e[None, :], -1), 1, _max)
    tl.store(block_expert_ptr + o_b, expert, mask=o_b < NB)


@triton.jit
def _dot(a, w, acc, DOT_F32: tl.constexpr):
    """acc + a [M, K] @ w [K, N]: int8 / bf16 weights widened in registers (int8 is exact in bf16)."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, w.to(tl.float32).to(a.dtype), acc)


@triton.jit
def _block_slots(sorted_ptr, expert_ptr, b, S, BM: tl.constexpr, ONE_SLOT: tl.constexpr):
    """(expert, slot ids [BM]) of block b; ONE_SLOT (T == 1): block b is slot b alone and expert_ptr the top-k ids."""
    e = tl.load(expert_ptr + b).to(tl.int32)
    if ONE_SLOT:
        slot = tl.where(tl.arange(0, BM) == 0, b, S)
    else:
        slot = tl.load(sorted_ptr + b * BM + tl.arange(0, BM))
    return e, slot


@triton.jit
def _gate_up_kernel(x, w, scale, h, part, sorted_ptr, block_expert_ptr, S, N, K, s_xm, s_we, s_wn, s_se, SPLIT,
                    TOP_K: tl.constexpr, HAS_SCALE: tl.constexpr, FUSE_SILU: tl.constexpr, DOT_F32: tl.constexpr,
                    ONE_SLOT: tl.constexpr, BM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """N = I (one half of w13's 2I rows); w1 row n and w3 row I + n go together."""
    b, i_n, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    e, slot = _block_slots(sorted_ptr, block_expert_ptr, b, S, BM, ONE_SLOT)
    if e < 0:
        return
    m_m = slot < S
    row = (slot // TOP_K).to(tl.int64)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    p_w = w + e.to(tl.int64) * s_we + o_n[None, :].to(tl.int64) * s_wn
    acc_g = tl.full((BM, BLOCK_N), 0.0, tl.float32)
    acc_u = tl.full((BM, BLOCK_N), 0.0, tl.float32)
    k_per = ((K + SPLIT - 1) // SPLIT + BLOCK_K - 1) // BLOCK_K * BLOCK_K
    for k0 in range(i_k * k_per, tl.minimum(i_k * k_per + k_per, K), BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        b_x = tl.load(x + row[:, None] * s_xm + o_k[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)
        m_w = m_k[:, None] & m_n[None, :]
        acc_g = _dot(b_x, tl.load(p_w + o_k[:, None], mask=m_w, other=0), acc_g, DOT_F32)
        acc_u = _dot(b_x, tl.load(p_w + N * s_wn + o_k[:, None], mask=m_w, other=0), acc_u, DOT_F32)
    if HAS_SCALE:
        acc_g = acc_g * tl.load(scale + e * s_se + o_n, mask=m_n, other=0.0)[None, :]
        acc_u = acc_u * tl.load(scale + e * s_se + N + o_n, mask=m_n, other=0.0)[None, :]
    m_out = m_m[:, None] & m_n[None, :]
    if FUSE_SILU:
        out = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
        tl.store(h + slot[:, None].to(tl.int64) * N + o_n[None, :], out.to(h.dtype.element_ty), mask=m_out)
    else:
        p = part + (i_k * S + slot[:, None].to(tl.int64)) * (2 * N) + o_n[None, :]
        tl.store(p, acc_g, mask=m_out)
        tl.store(p + N, acc_u, mask=m_out)


@triton.jit
def _silu_mul_kernel(part, h, S, N, SPLIT, BLOCK: tl.constexpr):
    slot, i_n = tl.program_id(0), tl.program_id(1)
    o_n = i_n * BLOCK + tl.arange(0, BLOCK)
    m_n = o_n < N
    g = tl.full((BLOCK,), 0.0, tl.float32)
    u = tl.full((BLOCK,), 0.0, tl.float32)
    for s in range(SPLIT):
        p = part + (s * S + slot).to(tl.int64) * (2 * N) + o_n
        g += tl.load(p, mask=m_n, other=0.0)
        u += tl.load(p + N, mask=m_n, other=0.0)
    tl.store(h + slot.to(tl.int64) * N + o_n, (g / (1.0 + tl.exp(-g)) * u).to(h.dtype.element_ty), mask=m_n)


@triton.jit
def _down_kernel(h, w, scale, weights, part, sorted_ptr, block_expert_ptr, S, N, K, s_we, s_wn, s_se, SPLIT,
                 HAS_SCALE: tl.constexpr, DOT_F32: tl.constexpr, ONE_SLOT: tl.constexpr, BM: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    b, i_n, i_k = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    e, slot = _block_slots(sorted_ptr, block_expert_ptr, b, S, BM, ONE_SLOT)
    if e < 0:
        return
    m_m = slot < S
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    p_w = w + e.to(tl.int64) * s_we + o_n[None, :].to(tl.int64) * s_wn
    acc = tl.full((BM, BLOCK_N), 0.0, tl.float32)
    k_per = ((K + SPLIT - 1) // SPLIT + BLOCK_K - 1) // BLOCK_K * BLOCK_K
    for k0 in range(i_k * k_per, tl.minimum(i_k * k_per + k_per, K), BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        b_h = tl.load(h + slot[:, None].to(tl.int64) * K + o_k[None, :], mask=m_m[:, None] & m_k[None, :], other=0.0)
        acc = _dot(b_h, tl.load(p_w + o_k[:, None], mask=m_k[:, None] & m_n[None, :], other=0), acc, DOT_F32)
    if HAS_SCALE:
        acc = acc * tl.load(scale + e * s_se + o_n, mask=m_n, other=0.0)[None, :]
    acc = acc * tl.load(weights + slot, mask=m_m, other=0.0).to(tl.float32)[:, None]
    p = part + (i_k * S + slot[:, None].to(tl.int64)) * N + o_n[None, :]
    tl.store(p, acc, mask=m_m[:, None] & m_n[None, :])


@triton.jit
def _sum_slots_kernel(part, out, S, N, SPLIT, TOP_K: tl.constexpr, BLOCK: tl.constexpr):
    t, i_n = tl.program_id(0), tl.program_id(1)
    o_n = i_n * BLOCK + tl.arange(0, BLOCK)
    m_n = o_n < N
    acc = tl.full((BLOCK,), 0.0, tl.float32)
    for s in range(SPLIT):
        for j in range(TOP_K):
            acc += tl.load(part + (s * S + t * TOP_K + j).to(tl.int64) * N + o_n, mask=m_n, other=0.0)
    tl.store(out + t.to(tl.int64) * N + o_n, acc.to(out.dtype.element_ty), mask=m_n)


def route(topk_ids: torch.Tensor, num_experts: int, block_m: int = BLOCK_M):
    """(sorted slot ids [NB*block_m] int32, S = padding; expert of each block [NB] int32, -1 = unused)."""
    S = topk_ids.numel()
    NB = -(-S // block_m) + min(num_experts, S)
    sorted_ids = torch.empty(NB * block_m, dtype=torch.int32, device=topk_ids.device)
    block_expert = torch.empty(NB, dtype=torch.int32, device=topk_ids.device)
    as_kernel(_route_kernel, topk_ids.device)[(1,)](
        topk_ids.reshape(-1).contiguous(), sorted_ids, block_expert, S, num_experts, BM=block_m,
        SP=triton.next_power_of_2(S), EP=triton.next_power_of_2(num_experts), NB=NB,
        NBP=triton.next_power_of_2(NB))
    return sorted_ids, block_expert


def choose_split(active_blocks: int, N: int, K: int, block_n: int, device) -> int:
    """Split K (powers of two) while the grid has fewer than PROGRAMS_PER_SM programs per SM: with one or two waves
    of programs the last wave's tail costs up to half the time (seen at T=1 on an H200)."""
    programs, split = active_blocks * -(-N // block_n), 1
    while programs * split < PROGRAMS_PER_SM * num_sms(device) and K // (split * 2) >= MIN_SPLIT_K:
        split *= 2
    return split


def moe_gemv(x, w13, w2, topk_weights, topk_ids, w13_scale=None, w2_scale=None, split=None, config=None):
    """Same contract as naive.fused_moe for T <= MAX_TOKENS; weights contiguous. `split`: (gate_up, down) or None."""
    cfg = {**CONFIG, **(config or {})}
    bn, bk = cfg["BLOCK_N"], cfg["BLOCK_K"]
    launch = dict(num_warps=cfg["num_warps"]) if x.device.type == "cpu" else \
        dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    T, top_k = topk_ids.shape
    E, two_i, H = w13.shape
    inter, S, dev = two_i // 2, T * top_k, x.device
    x, weights = x.contiguous(), topk_weights.reshape(-1).contiguous()
    interp = dev.type == "cpu"
    dot_f32 = interp or x.dtype == torch.float32
    one_slot = T == 1  # a token's top-k experts are distinct: every slot is a block of its own, no routing launch
    if one_slot:
        sorted_ids = block_expert = topk_ids.reshape(-1).contiguous()
    else:
        sorted_ids, block_expert = route(topk_ids, E)
    NB = block_expert.numel()
    active = min(NB, min(E, S))  # blocks that can be in use, known without looking at the ids
    s13, s2 = split or (choose_split(active, inter, H, bn, dev), choose_split(active, H, inter, bn, dev))
    h = torch.empty(S, inter, dtype=torch.float32 if dot_f32 else x.dtype, device=dev)
    part13 = torch.empty(s13, S, two_i, dtype=torch.float32, device=dev) if s13 > 1 else h
    dummy = h
    as_kernel(_gate_up_kernel, dev)[(NB, triton.cdiv(inter, bn), s13)](
        x, w13, w13_scale if w13_scale is not None else dummy, h, part13, sorted_ids, block_expert, S, inter, H,
        x.stride(0), w13.stride(0), w13.stride(1), w13_scale.stride(0) if w13_scale is not None else 0, s13,
        TOP_K=top_k, HAS_SCALE=w13_scale is not None, FUSE_SILU=s13 == 1, DOT_F32=dot_f32, ONE_SLOT=one_slot,
        BM=BLOCK_M, BLOCK_N=bn, BLOCK_K=bk, **launch)
    if s13 > 1:
        as_kernel(_silu_mul_kernel, dev)[(S, triton.cdiv(inter, 1024))](part13, h, S, inter, s13, BLOCK=1024)
    part2 = torch.empty(s2, S, H, dtype=torch.float32, device=dev)
    as_kernel(_down_kernel, dev)[(NB, triton.cdiv(H, bn), s2)](
        h, w2, w2_scale if w2_scale is not None else dummy, weights, part2, sorted_ids, block_expert, S, H, inter,
        w2.stride(0), w2.stride(1), w2_scale.stride(0) if w2_scale is not None else 0, s2,
        HAS_SCALE=w2_scale is not None, DOT_F32=dot_f32, ONE_SLOT=one_slot, BM=BLOCK_M, BLOCK_N=bn,
        BLOCK_K=bk, **launch)
    out = torch.empty(T, H, dtype=torch.float32 if interp else x.dtype, device=dev)
    as_kernel(_sum_slots_kernel, dev)[(T, triton.cdiv(H, 1024))](part2, out, S, H, s2, TOP_K=top_k, BLOCK=1024)
    return out.to(x.dtype)  # the interpreter truncates fp32 -> bf16; torch rounds to nearest
