"""Triton chunked prefill for lightning attention: input checks, chunk planning and the three launches.

The kernels and the design notes live in chunk_kernels.py; timings and the choice of defaults in bench/README.md.
"""
import torch
import triton

from .chunk_kernels import _delta_kernel, _output_kernel, _scan_kernel
from .launch import as_kernel, num_sms

HEAD_DIMS = (16, 32, 64, 128)
# (Q S, K^T V, P V) operand modes: 0 one bf16 product, 1 bf16 hi + lo (~fp32), 2 one fp16 product (range-scaled),
# 3 one tf32 product. The "-s" sets keep only the state's product precise (bf16 q, k, v need no conversion); "-sp"
# and "-skv" also P V, resp. K^T V; "fp16s-splitp" splits P (A operand from registers: no shared-memory copy).
OPERANDS = {"split": (1, 1, 1), "split-fp16": (1, 2, 2), "fp16": (2, 2, 2), "split-state": (1, 1, 0),
            "bf16": (0, 0, 0), "split-s": (1, 0, 0), "fp16-s": (2, 0, 0), "tf32-s": (3, 0, 0),
            "split-sp": (1, 0, 1), "fp16-sp": (2, 0, 2), "fp16s-splitp": (2, 0, 1), "fp16-skv": (2, 2, 0)}


def _plan(T, H, cu_seqlens, chunk, device):
    """Chunk bookkeeping without a host sync: (programs, chunk_seq, chunk_off) for the packed batch."""
    if cu_seqlens is None:
        return triton.cdiv(max(T, 1), chunk), None, None
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int64)
    counts = (lens + chunk - 1) // chunk
    ends = torch.cumsum(counts, 0)
    programs = T // chunk + len(lens)
    chunk_seq = torch.searchsorted(ends, torch.arange(programs, device=device), right=True)
    chunk_seq = chunk_seq.clamp_(max=len(lens) - 1).to(torch.int32)
    return programs, chunk_seq, (ends - counts).to(torch.int32)


def _pick_chunk(T, H, n_v, block_t, device, min_chunk=256, max_chunk=4096):
    """Largest power-of-two chunk in [min_chunk, max_chunk] that still gives about 3.5 programs per SM (H100 run 3:
    longer chunks cut the state passes, 256 KB per chunk and head, until the grid stops filling the chip)."""
    chunk = max_chunk
    while chunk > max(min_chunk, block_t) and triton.cdiv(T, chunk) * H * n_v * 2 < 7 * num_sms(device):
        chunk //= 2
    return chunk


def _check_inputs(q, k, v, slopes, initial_state, cu_seqlens):
    T, H, D = q.shape
    if D not in HEAD_DIMS or v.shape[-1] != D:
        raise ValueError(f"head dim must be one of {HEAD_DIMS} for q, k and v, got q {D}, v {v.shape[-1]}")
    if q.dtype not in (torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must all be bfloat16 or float32, got {q.dtype}, {k.dtype}, {v.dtype}")
    n = 1 if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None and tuple(initial_state.shape) != (n, H, D, D):
        raise ValueError(f"initial_state must be [N={n}, H={H}, D={D}, D={D}], got {tuple(initial_state.shape)}")
    return T, H, D, n


def chunk_prefill(q, k, v, slopes, initial_state=None, cu_seqlens=None, *, chunk=None, block_t=64, block_v=None,
                  num_warps=4, num_stages=2, operands="fp16", delta_block_v=None, delta_warps=None,
                  f32_precision="tf32x3"):
    """Lightning prefill of packed sequences on Triton.

    q, k, v [T, H, D] (bf16 or fp32; last dim contiguous, other strides free), slopes [H] fp32,
    initial_state [N, H, D, D] fp32 or None, cu_seqlens [N+1] int or None (one sequence).
    Returns (o [T, H, D] in q.dtype, final_state [N, H, D, D] fp32). Keyword arguments tune the launch only
    (operands: how fp32 dot operands of bf16 inputs meet the tensor cores, a key of OPERANDS;
    f32_precision: the GPU's dot mode for fp32 inputs, "tf32x3" or "ieee"; the interpreter is always exact).
    """
    T, H, D, n = _check_inputs(q, k, v, slopes, initial_state, cu_seqlens)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    device = q.device
    is_f32 = q.dtype == torch.float32
    block_v = min(block_v or 32, D)
    delta_block_v = min(delta_block_v or 128, D)
    delta_warps = delta_warps or (8 if delta_block_v * D >= 128 * 128 else 4)
    n_v = D // block_v
    chunk = chunk or _pick_chunk(T, H, n_v, block_t, device)
    if chunk % block_t:
        raise ValueError(f"chunk ({chunk}) must be a multiple of block_t ({block_t})")
    slopes = slopes.to(device=device, dtype=torch.float32).contiguous()
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.to(device=device, dtype=torch.int32).contiguous()
    programs, chunk_seq, chunk_off = _plan(T, H, cu_seqlens, chunk, device)
    interp = device.type == "cpu"
    o = torch.empty(T, H, D, dtype=torch.float32 if interp else q.dtype, device=device)
    final = torch.empty(n, H, D, D, dtype=torch.float32, device=device)
    buf = torch.empty(programs, H, D, D, dtype=torch.float32, device=device)
    init = None if initial_state is None else initial_state.to(device=device, dtype=torch.float32).contiguous()
    if operands not in OPERANDS:
        raise ValueError(f"operands must be one of {sorted(OPERANDS)}, got {operands!r}")
    split_s, split_kv, split_p = OPERANDS[operands]
    common = dict(H=H, D=D, CHUNK=chunk, BT=block_t, VARLEN=cu_seqlens is not None, IEEE=is_f32, SPLIT_KV=split_kv,
                  INTERP=interp, F32P=f32_precision, num_stages=num_stages)
    plan = (chunk_seq, chunk_off, cu_seqlens, T)
    as_kernel(_delta_kernel, device)[(D // delta_block_v, programs, H)](
        k, v, slopes, buf, *plan, k.stride(0), k.stride(1), v.stride(0), v.stride(1), BV=delta_block_v,
        num_warps=delta_warps, **common)
    block_k = min(16, D)
    as_kernel(_scan_kernel, device)[(n, H, D // block_k)](
        buf, init, final, slopes, chunk_off, cu_seqlens, T, H=H, D=D, CHUNK=chunk, BK=block_k,
        VARLEN=cu_seqlens is not None, HAS_INIT=init is not None, num_warps=4, num_stages=3)
    as_kernel(_output_kernel, device)[(n_v, programs, H)](
        q, k, v, o, slopes, buf, *plan, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        BV=block_v, SPLIT_S=split_s, SPLIT_P=split_p, num_warps=num_warps, **common)
    return o.to(q.dtype), final  # the interpreter rounds fp32 -> bf16 by truncation, so torch casts there
