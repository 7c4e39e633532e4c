"""Fused lightning prefill on Triton: input checks and the launch of fused_kernels.py (one per segment of tokens).

One program per (V slice, sequence, head) walks the whole sequence with its state in registers, so the grid is
N * H * D / block_v programs whatever the length. When that does not fill the GPU (few heads per GPU under tensor
parallelism, e.g. 8), `fused_prefill` runs chunk.py's chunked form instead, which splits sequences into chunks.
"""
import torch

from .chunk import OPERANDS, _check_inputs, chunk_prefill
from .fused_kernels import _fused_kernel
from .launch import as_kernel, num_sms


def fills_gpu(H, D, block_v, device, min_programs=None):
    """Whether one sequence alone gives the fused grid enough programs (default: one per two SMs, so that 64 heads
    with 64-column value blocks, 128 programs of 8 warps, still count)."""
    return H * (D // min(block_v, D)) >= (num_sms(device) // 2 if min_programs is None else min_programs)


def fused_prefill(q, k, v, slopes, initial_state=None, cu_seqlens=None, *, block_t=64, block_v=32, num_warps=4,
                  num_stages=2, operands="split-s", f32_precision="tf32x3", min_programs=None, segment=None):
    """Lightning prefill of packed sequences, one launch (per segment).

    Same contract as chunk.chunk_prefill: q, k, v [T, H, D] (bf16 or fp32; last dim contiguous), slopes [H] fp32,
    initial_state [N, H, D, D] fp32 or None, cu_seqlens [N+1] int or None. Returns (o [T, H, D] in q.dtype,
    final_state [N, H, D, D] fp32). operands: a key of chunk.OPERANDS. min_programs: below this many programs per
    sequence the chunked form runs instead (None: half the SM count; 0: always fused). segment: tokens per launch
    (None: whole sequences in one launch); the launches are cdiv(T, segment), the state passing through final_state.
    """
    T, H, D, n = _check_inputs(q, k, v, slopes, initial_state, cu_seqlens)
    if operands not in OPERANDS:
        raise ValueError(f"operands must be one of {sorted(OPERANDS)}, got {operands!r}")
    block_v = min(block_v, D)
    if not fills_gpu(H, D, block_v, q.device, min_programs):
        return chunk_prefill(q, k, v, slopes, initial_state, cu_seqlens, operands=operands,
                             f32_precision=f32_precision)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    device = q.device
    interp = device.type == "cpu"
    slopes = slopes.to(device=device, dtype=torch.float32).contiguous()
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.to(device=device, dtype=torch.int32).contiguous()
    o = torch.empty(T, H, D, dtype=torch.float32 if interp else q.dtype, device=device)
    final = torch.empty(n, H, D, D, dtype=torch.float32, device=device)
    init = None if initial_state is None else initial_state.to(device=device, dtype=torch.float32).contiguous()
    split_s, split_kv, split_p = OPERANDS[operands]
    segment = -(-max(T, 1) // block_t) * block_t if segment is None else segment
    if segment % block_t:
        raise ValueError(f"segment ({segment}) must be a multiple of block_t ({block_t})")
    kernel = as_kernel(_fused_kernel, device)
    for seg_lo in range(0, max(T, 1), segment):  # T bounds every sequence's length: no host sync for the lengths
        kernel[(D // block_v, n, H)](
            q, k, v, o, slopes, init if seg_lo == 0 else final, final, cu_seqlens, T, seg_lo, segment, q.stride(0),
            q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), H=H, D=D, BT=block_t, BV=block_v,
            VARLEN=cu_seqlens is not None, HAS_INIT=init is not None or seg_lo > 0, IEEE=q.dtype == torch.float32,
            SPLIT_S=split_s, SPLIT_KV=split_kv, SPLIT_P=split_p, INTERP=interp, F32P=f32_precision,
            num_warps=num_warps, num_stages=num_stages)
    return o.to(q.dtype), final  # the interpreter rounds fp32 -> bf16 by truncation, so torch casts there
