"""Triton decode for lightning attention: one new token per sequence against a pool of fp32 states, in place.

One program per (batch row, head, slice of BV value columns): it loads its [D, BV] state tile once,
applies S = exp(-s) S + k^T v, writes the tile back and emits o = q S for its columns. The step is bound by the
state traffic (8 D^2 bytes per row and head), so tiles are small enough to give every SM several programs.
"""
import torch
import triton
import triton.language as tl

from .launch import as_kernel, num_sms


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _decode_kernel(q, k, v, o, slopes, pool, slot_ids, s_qb, s_qh, s_kb, s_kh, s_vb, s_vh,
                   s_ps, s_ph, H: tl.constexpr, D: tl.constexpr, BV: tl.constexpr):
    b, h, i_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_d, o_v = tl.arange(0, D), i_v * BV + tl.arange(0, BV)
    slot = tl.load(slot_ids + b).to(tl.int64)
    p_o = o + (b * H + h).to(tl.int64) * D + o_v
    if slot < 0:
        tl.store(p_o, tl.full([BV], 0.0, tl.float32).to(o.dtype.element_ty))
        return
    p_state = pool + slot * s_ps + h * s_ph + o_d[:, None] * D + o_v[None, :]
    state = tl.load(p_state, eviction_policy="evict_first")
    b_q = tl.load(q + b * s_qb + h * s_qh + o_d).to(tl.float32)
    b_k = tl.load(k + b * s_kb + h * s_kh + o_d).to(tl.float32)
    b_v = tl.load(v + b * s_vb + h * s_vh + o_v).to(tl.float32)
    decay = tl.exp2(-tl.load(slopes + h) * 1.4426950408889634)
    state = state * decay + b_k[:, None] * b_v[None, :]
    tl.store(p_state, state, eviction_policy="evict_first")
    tl.store(p_o, tl.reduce(b_q[:, None] * state, 0, _add).to(o.dtype.element_ty))


def _pick_block_v(B, H, D, device):
    """Widest tile (fewest, longest rows) that still gives every SM about four programs."""
    block_v = D
    while block_v > 16 and B * H * (D // block_v) < 4 * num_sms(device):
        block_v //= 2
    return block_v


def recurrent_decode(q, k, v, slopes, state_pool, slot_ids, *, block_v=None, num_warps=4):
    """One decode step on Triton.

    q, k, v [B, H, D] (any float dtype; last dim contiguous), slopes [H] fp32, state_pool [S, H, D, D] fp32 with
    contiguous [D, D] tiles (updated in place), slot_ids [B] int (negative = padding: o row is zero, no state touched).
    Returns o [B, H, D] in q.dtype.
    """
    B, H, D = q.shape
    if state_pool.dtype != torch.float32 or tuple(state_pool.shape[1:]) != (H, D, D):
        raise ValueError(f"state_pool must be fp32 [S, {H}, {D}, {D}], got {state_pool.dtype} "
                         f"{tuple(state_pool.shape)}")
    if state_pool.stride(-1) != 1 or state_pool.stride(-2) != D:
        raise ValueError("state_pool must have contiguous [D, D] state tiles (it is updated in place)")
    if slot_ids.shape != (B,):
        raise ValueError(f"slot_ids must be [B]={B}, got {tuple(slot_ids.shape)}")
    if D < 16 or D & (D - 1):
        raise ValueError(f"head dim must be a power of two >= 16, got {D}")
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    device = q.device
    block_v = min(block_v or _pick_block_v(B, H, D, device), D)
    interp = device.type == "cpu"
    o = torch.empty(B, H, D, dtype=torch.float32 if interp else q.dtype, device=device)
    slopes = slopes.to(device=device, dtype=torch.float32).contiguous()
    as_kernel(_decode_kernel, device)[(B, H, D // block_v)](
        q, k, v, o, slopes, state_pool, slot_ids.to(device).contiguous(), q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), v.stride(0), v.stride(1), state_pool.stride(0), state_pool.stride(1), H=H, D=D, BV=block_v,
        num_warps=num_warps)
    return o.to(q.dtype)  # the interpreter rounds fp32 -> bf16 by truncation, so torch casts there
