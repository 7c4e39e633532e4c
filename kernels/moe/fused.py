"""Triton fused MoE for M1's experts with int8 (or bf16/fp32) weights and bf16/fp32 activations.

1. `align`: the T*k (token, expert) slots sorted by expert, each expert's run padded to a multiple of BLOCK_M
   (torch ops, no host sync), so one program block of the grouped GEMM touches one expert only.
2. Prefill-sized batches: `_grouped_gemm` — per block of slots, A rows gathered by slot, B the expert's
   [N, K] weight tile (int8 converted to bf16 in registers), fp32 accumulation, fp32 per-row scale, optional routing
   weight. 128-row blocks; programs ordered so GROUP_M row blocks sweep the columns together (weights and A rows
   reused from L2); SWAP (off by default) computes W @ A^T instead, the converted weight tile as the left operand.
3. Decode-sized batches (T <= gemv.MAX_TOKENS) go to gemv.py (fused SiLU, split-K, graph-capturable); the older
   `_slot_gemv` below (one program per (slot, BLOCK_N rows)) is only reached by callers of `_expert_gemm`.
Gate/up GEMM -> SiLU(gate) * up -> down GEMM (times routing weight) -> sum over the k slots of each token.
Prefill variants, off until measured faster (bench/prefill_variants.py): SILU_UP computes SiLU(gate) * up in the
gate/up GEMM's epilogue; FAST_INT8 converts int8 weights by bit arithmetic instead of the conversion unit.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.lightning.launch import as_kernel

from . import gemv

GEMV_MAX_SLOTS = 8  # up to batch 4 at top-2: each slot streams its expert's rows once
PROGRAMS_WANTED = 512  # ~4 per SM of an H100
SMALL_MAX_SLOTS = 1024  # up to here the grouped GEMM takes 16-row blocks (little padding per expert)
SMALL_TILES = (16, 64, 64, 4, 3, False, 8)
# prefill-sized batches: 128-row blocks (wgmma-sized), weight tiles shared by GROUP_M row blocks in flight; the best of
# the H200 sweep in bench/README.md (the swapped int8 product measured no faster there, so it is off by default)
PREFILL_TILES = {"int8": (128, 128, 64, 8, 4, False, 8), "bf16": (128, 256, 64, 8, 3, False, 8)}
# SiLU * up fused into the prefill gate/up GEMM (each program computes BLOCK_N gate AND BLOCK_N up columns, so the
# intermediate is written once, [T*k, I]); off until bench/prefill_variants.py shows it faster on the GPU.
SILU_UP = {"int8": False, "bf16": False}
SILU_UP_TILES = {"int8": (128, 64, 64, 8, 4, False, 8), "bf16": (128, 128, 64, 8, 3, False, 8)}
# int8 weights converted by integer/FMA bit arithmetic (_int8_as_f32) instead of the conversion unit, in the grouped GEMM
FAST_INT8 = False


def align(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """(sorted slot ids [P] padded with T*k, expert of each BLOCK_M block [P/block_m], number of used rows [1]).

    P = T*k + E*(block_m-1) rounded up to block_m is an upper bound; blocks past the used rows are skipped."""
    flat = topk_ids.flatten()
    n = flat.numel()
    counts = torch.bincount(flat, minlength=num_experts)
    padded = (counts + block_m - 1) // block_m * block_m
    ends = padded.cumsum(0)
    starts = ends - padded
    order = flat.argsort(stable=True)
    sorted_experts = flat[order]
    first_of_expert = counts.cumsum(0) - counts
    rank = torch.arange(n, device=flat.device) - first_of_expert[sorted_experts]
    capacity = -(-(n + num_experts * (block_m - 1)) // block_m) * block_m
    sorted_ids = torch.full((capacity,), n, dtype=torch.int32, device=flat.device)
    sorted_ids[starts[sorted_experts] + rank] = order.to(torch.int32)
    block_starts = torch.arange(0, capacity, block_m, device=flat.device)
    block_expert = torch.searchsorted(ends, block_starts, right=True).clamp(max=num_experts - 1).to(torch.int32)
    return sorted_ids, block_expert, ends[-1:].to(torch.int32)


@triton.jit
def _add(a, b):
    """tl.reduce's combiner. (tl.sum / tl.zeros live in triton.language.standard, whose jit functions cannot run
    under the interpreter when triton was imported before TRITON_INTERPRET was set, as in a full test run.)"""
    return a + b


@triton.jit
def _tile_order(pid, num_m_blocks, num_n, GROUP_M: tl.constexpr):
    """(row block, column block) of program `pid`: GROUP_M row blocks (one or two experts) sweep all column blocks
    together, the row block fastest, so the running programs share their experts' weight tiles and A rows in L2."""
    per_group = GROUP_M * num_n
    first_m = pid // per_group * GROUP_M
    group_m = tl.minimum(num_m_blocks - first_m, GROUP_M)
    return first_m + (pid % per_group) % group_m, (pid % per_group) // group_m


@triton.jit
def _int8_as_f32(x):
    """int8 -> fp32 on the integer and FMA pipes instead of the conversion unit (16 results per clock per SM on
    Hopper, as slow as the tensor cores' use of them): the bits 0x4B000080 + x are the fp32 number 2^23 + 128 + x."""
    return (x.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0


@triton.jit
def _weights(b_b, dtype: tl.constexpr, FAST_INT8: tl.constexpr):
    """A weight tile in the dot's dtype."""
    if FAST_INT8:
        return _int8_as_f32(b_b).to(dtype)
    return b_b.to(dtype)


@triton.jit
def _mma(p_a, p_b, m_m, o_k, K, acc, SWAP: tl.constexpr, EVEN_K: tl.constexpr, IS_FP32: tl.constexpr,
         INTERP: tl.constexpr, FAST_INT8: tl.constexpr):
    """acc += A[rows, o_k] @ W[cols, o_k]^T (or its transpose W @ A^T when SWAP)."""
    if SWAP:
        if EVEN_K:
            b_a = tl.load(p_a[None, :] + o_k[:, None], mask=m_m[None, :], other=0.0)  # [BLOCK_K, BLOCK_M]
            b_b = tl.load(p_b[:, None] + o_k[None, :])  # [BLOCK_N, BLOCK_K]
        else:
            b_a = tl.load(p_a[None, :] + o_k[:, None], mask=m_m[None, :] & (o_k < K)[:, None], other=0.0)
            b_b = tl.load(p_b[:, None] + o_k[None, :], mask=(o_k < K)[None, :], other=0)
        if IS_FP32 or INTERP:  # the interpreter multiplies bf16 bit patterns as integers (Triton 3.9): go fp32
            return tl.dot(_weights(b_b, tl.float32, FAST_INT8), b_a.to(tl.float32), acc, input_precision="ieee")
        return tl.dot(_weights(b_b, b_a.dtype, FAST_INT8), b_a, acc)
    if EVEN_K:
        b_a = tl.load(p_a[:, None] + o_k[None, :], mask=m_m[:, None], other=0.0)  # [BLOCK_M, BLOCK_K]
        b_b = tl.load(p_b[None, :] + o_k[:, None])  # [BLOCK_K, BLOCK_N]
    else:
        b_a = tl.load(p_a[:, None] + o_k[None, :], mask=m_m[:, None] & (o_k < K)[None, :], other=0.0)
        b_b = tl.load(p_b[None, :] + o_k[:, None], mask=(o_k < K)[:, None], other=0)
    if IS_FP32 or INTERP:
        return tl.dot(b_a.to(tl.float32), _weights(b_b, tl.float32, FAST_INT8), acc, input_precision="ieee")
    return tl.dot(b_a, _weights(b_b, b_a.dtype, FAST_INT8), acc)


@triton.jit
def _grouped_gemm(a_ptr, b_ptr, c_ptr, scale_ptr, w_ptr, sorted_ptr, expert_ptr, used_ptr,
                  N, K, num_slots, num_m_blocks, stride_am, stride_be, stride_bn, stride_cm, stride_se,
                  TOP_K: tl.constexpr, A_PER_TOKEN: tl.constexpr, HAS_SCALE: tl.constexpr, MUL_WEIGHT: tl.constexpr,
                  IS_FP32: tl.constexpr, INTERP: tl.constexpr, SWAP: tl.constexpr, EVEN_K: tl.constexpr,
                  GROUP_M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  SILU_UP: tl.constexpr, FAST_INT8: tl.constexpr):
    """C[slots of one row block, BLOCK_N columns]. SWAP computes the transposed tile W @ A^T so the (int8) weight
    tile, converted in registers, is the left operand: Hopper's wgmma reads its left operand from registers, the
    right one from shared memory, which saves the converted tile a round trip through shared memory.
    SILU_UP (the gate/up GEMM): the program also computes the matching up columns (weight rows N + o_n) and writes
    SiLU(gate) * up in fp32, rounded once to C's dtype (the unfused path rounds gate and up first); C is [slots, N]."""
    i_m, i_n = _tile_order(tl.program_id(0), num_m_blocks, (N + BLOCK_N - 1) // BLOCK_N, GROUP_M)
    if i_m * BLOCK_M >= tl.load(used_ptr):
        return
    e = tl.load(expert_ptr + i_m).to(tl.int64)
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slot = tl.load(sorted_ptr + o_m)
    m_m = slot < num_slots
    if A_PER_TOKEN:
        row = (slot // TOP_K).to(tl.int64)
    else:
        row = slot.to(tl.int64)
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    o_nc = tl.minimum(o_n, N - 1).to(tl.int64)  # clamped: weight loads need no mask on N
    p_a = a_ptr + row * stride_am
    p_b = b_ptr + e * stride_be + o_nc * stride_bn
    p_u = p_b + N * stride_bn  # the up rows (SILU_UP)
    if SWAP:
        acc = tl.full((BLOCK_N, BLOCK_M), 0.0, tl.float32)
    else:
        acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    acc_u = acc
    for k0 in range(0, K, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        acc = _mma(p_a, p_b, m_m, o_k, K, acc, SWAP, EVEN_K, IS_FP32, INTERP, FAST_INT8)
        if SILU_UP:
            acc_u = _mma(p_a, p_u, m_m, o_k, K, acc_u, SWAP, EVEN_K, IS_FP32, INTERP, FAST_INT8)
    if SWAP:
        acc = tl.trans(acc)
        acc_u = tl.trans(acc_u)
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + e * stride_se + o_n, mask=m_n, other=0.0)[None, :]
        if SILU_UP:
            acc_u = acc_u * tl.load(scale_ptr + e * stride_se + N + o_n, mask=m_n, other=0.0)[None, :]
    if SILU_UP:
        acc = acc / (1.0 + tl.exp(-acc)) * acc_u
    if MUL_WEIGHT:
        acc = acc * tl.load(w_ptr + slot, mask=m_m, other=0.0).to(tl.float32)[:, None]
    p_c = c_ptr + slot[:, None].to(tl.int64) * stride_cm + o_n[None, :]
    tl.store(p_c, acc.to(c_ptr.dtype.element_ty), mask=m_m[:, None] & m_n[None, :])


@triton.jit
def _slot_gemv(a_ptr, b_ptr, c_ptr, scale_ptr, w_ptr, ids_ptr, N, K, stride_am, stride_be, stride_bn, stride_cm,
               stride_se, TOP_K: tl.constexpr, A_PER_TOKEN: tl.constexpr, HAS_SCALE: tl.constexpr,
               MUL_WEIGHT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    i_s, i_n = tl.program_id(0), tl.program_id(1)
    e = tl.load(ids_ptr + i_s).to(tl.int64)
    row = i_s // TOP_K if A_PER_TOKEN else i_s
    o_n = i_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_n = o_n < N
    b_acc = tl.full((BLOCK_N,), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < K
        b_a = tl.load(a_ptr + row * stride_am + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_b = tl.load(b_ptr + e * stride_be + o_n[:, None].to(tl.int64) * stride_bn + o_k[None, :],
                      mask=m_n[:, None] & m_k[None, :], other=0)
        b_acc += tl.reduce(b_b.to(tl.float32) * b_a[None, :], 1, _add)
    if HAS_SCALE:
        b_acc = b_acc * tl.load(scale_ptr + e * stride_se + o_n, mask=m_n, other=0.0)
    if MUL_WEIGHT:
        b_acc = b_acc * tl.load(w_ptr + i_s).to(tl.float32)
    tl.store(c_ptr + i_s * stride_cm + o_n, b_acc.to(c_ptr.dtype.element_ty), mask=m_n)


def _expert_gemm(a, w, scale, weights, ids, route, top_k, a_per_token, mul_weight, out_dtype, silu_up=False):
    """C [T*k, N] = A[rows of each slot] @ w[expert of the slot]^T (* scale) (* routing weight); with silu_up (grouped
    GEMM only) C [T*k, N/2] = SiLU(first N/2 columns) * last N/2 columns."""
    num_slots, (E, N, K) = ids.numel(), w.shape
    N = N // 2 if silu_up else N
    c = torch.empty(num_slots, N, dtype=out_dtype, device=a.device)
    has_scale = scale is not None
    scale = scale if has_scale else c
    common = dict(TOP_K=top_k, A_PER_TOKEN=a_per_token, HAS_SCALE=has_scale, MUL_WEIGHT=mul_weight)
    if route is None:
        # enough programs to keep every SM streaming: narrow row tiles when there are few output rows (high TP)
        BLOCK_N, BLOCK_K = (16, 512) if num_slots * N < 64 * PROGRAMS_WANTED else (64, 128)
        grid = (num_slots, triton.cdiv(N, BLOCK_N))
        as_kernel(_slot_gemv, a.device)[grid](a, w, c, scale, weights, ids, N, K, a.stride(0), w.stride(0),
                                              w.stride(1), c.stride(0), scale.stride(0), BLOCK_N=BLOCK_N,
                                              BLOCK_K=BLOCK_K, **common)
        return c
    sorted_ids, block_expert, used, tiles = route
    block_m, BLOCK_N, BLOCK_K, warps, stages, swap, group_m = tiles
    num_m_blocks = block_expert.numel()
    grid = (num_m_blocks * triton.cdiv(N, BLOCK_N),)
    as_kernel(_grouped_gemm, a.device)[grid](a, w, c, scale, weights, sorted_ids, block_expert, used, N, K,
                                             num_slots, num_m_blocks, a.stride(0), w.stride(0), w.stride(1),
                                             c.stride(0), scale.stride(0), IS_FP32=a.dtype == torch.float32,
                                             INTERP=a.device.type == "cpu", SWAP=swap, EVEN_K=K % BLOCK_K == 0,
                                             GROUP_M=group_m, BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                                             SILU_UP=silu_up, FAST_INT8=FAST_INT8 and w.dtype == torch.int8,
                                             num_warps=warps, num_stages=stages, **common)
    return c


def gemm_tiles(num_slots: int, int8: bool) -> tuple:
    """(block_m, BLOCK_N, BLOCK_K, num_warps, num_stages, SWAP, GROUP_M) of the grouped GEMM for `num_slots` routed
    (token, expert) slots."""
    if num_slots <= SMALL_MAX_SLOTS:
        return SMALL_TILES
    return PREFILL_TILES["int8" if int8 else "bf16"]


def triton_fused_moe(x, w13, w2, topk_weights, topk_ids, w13_scale=None, w2_scale=None,
                     silu_up=None) -> torch.Tensor:
    """Same contract as naive.fused_moe (shapes there); weights must be contiguous. `silu_up` (default SILU_UP of
    the weights' kind) fuses SiLU * up into the prefill gate/up GEMM."""
    T, top_k = topk_ids.shape
    if T <= gemv.MAX_TOKENS:
        return gemv.moe_gemv(x, w13.contiguous(), w2.contiguous(), topk_weights, topk_ids, w13_scale, w2_scale)
    inter = w2.shape[-1]
    x, w13, w2 = x.contiguous(), w13.contiguous(), w2.contiguous()
    ids = topk_ids.flatten().to(torch.int32).contiguous()
    weights = topk_weights.flatten().contiguous()
    route, fuse, kind, tiles = None, False, None, None
    if ids.numel() > GEMV_MAX_SLOTS:  # sorted once, shared by both GEMMs
        kind = "int8" if w13.dtype == torch.int8 else "bf16"
        tiles = gemm_tiles(ids.numel(), kind == "int8")
        route = (*align(topk_ids, w13.shape[0], tiles[0]), tiles)
        fuse = SILU_UP[kind] if silu_up is None else silu_up
    if route is not None and fuse and ids.numel() > SMALL_MAX_SLOTS:  # SiLU * up in the gate/up GEMM's epilogue
        fused_tiles = SILU_UP_TILES[kind]
        if fused_tiles[0] != tiles[0]:
            raise ValueError(f"SILU_UP_TILES {fused_tiles} must keep the row block of PREFILL_TILES {tiles}")
        h = _expert_gemm(x, w13, w13_scale, weights, ids, (*route[:3], fused_tiles), top_k, True, False, x.dtype,
                         silu_up=True)
    else:  # prefill: gate/up written in x.dtype (as the reference rounds it; half the bytes); decode keeps fp32
        gate_up = _expert_gemm(x, w13, w13_scale, weights, ids, route, top_k, True, False,
                               torch.float32 if route is None else x.dtype)
        h = (F.silu(gate_up[:, :inter]) * gate_up[:, inter:]).to(x.dtype)
    y = _expert_gemm(h, w2, w2_scale, weights, ids, route, top_k, False, True, torch.float32)
    return y.view(T, top_k, -1).sum(1).to(x.dtype)
