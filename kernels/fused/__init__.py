"""Fused small ops of the decode path (one launch each where the engine's modules take several).

Shapes (T token rows; dtype = the activation dtype, bf16/fp16/fp32; all row tensors contiguous):
- add_rms_norm(h [T, N], y [T, N], weight [N], eps, alpha=1, beta=1) -> (normed [T, N], x [T, N]):
  x = alpha*h + beta*y (M1's residual), normed = RMSNorm(x) as engine/layers/norm.py (fp32 stats, weight applied
  after casting back). Feed `normed` to the next sublayer.
- silu_mul(gate_up [T, 2I]) -> [T, I]: SiLU(gate) * up.
- router_topk(logits [T, E] fp32, top_k, dtype) -> (weights [T, k] dtype, ids [T, k] int64): fp32 softmax,
  top-k, renormalise (engine/layers/moe.py's route after its gate matmul x.float() @ gate.T, which stays cuBLAS).
- lightning_gate_norm(o [T, N], gate [T, N], weight [N], eps) -> [T, N]: sigmoid(gate) * RMSNorm(o), TP1.
  With tensor parallelism the norm spans all ranks' heads: lightning_gate_partial(o, gate, weight) ->
  (sigmoid(gate) * (weight * o) [T, N_local], sum of squares [T, 1] fp32) before out_proj; after out_proj the
  caller all-reduces cat([partial.float(), sum_sq], -1) [T, H + 1]; rms_scale(that, inner, eps, dtype) -> [T, H].
- lm_head_logits(hidden [T, H] fp32, weight [V, H] bf16) -> [T, V] fp32 (lm_head.py).
Every op is graph-capturable (grids from shapes only). CPU tensors run through Triton's interpreter.
"""
import torch
import triton

from kernels.lightning.launch import as_kernel

from . import naive
from .elementwise import _router_kernel, _silu_mul_kernel
from .lm_head import lm_head_logits
from .rows import _add_rms_norm_kernel, _gate_norm_kernel, _rms_scale_kernel

__all__ = ["add_rms_norm", "silu_mul", "router_topk", "lightning_gate_norm", "lightning_gate_partial",
           "rms_scale", "lm_head_logits", "naive"]


def _rows(*tensors, n=None):
    for t in tensors:
        if t.dim() != 2 or not t.is_contiguous() or (n is not None and t.shape[1] != n):
            raise ValueError(f"expected contiguous [T, {n or 'N'}] tensors, got {tuple(t.shape)}")


def _launch_args(device, N):
    warps = 1 if N <= 512 else 4 if N <= 4096 else 8
    return dict(BLOCK=triton.next_power_of_2(N), ROUND=device.type != "cpu", num_warps=warps)


def add_rms_norm(h, y, weight, eps: float, alpha: float = 1.0, beta: float = 1.0):
    _rows(h, y, n=weight.shape[0])
    if h.shape != y.shape:
        raise ValueError(f"h and y must match, got {tuple(h.shape)} and {tuple(y.shape)}")
    T, N = h.shape
    x, normed = torch.empty_like(h), torch.empty_like(h)
    as_kernel(_add_rms_norm_kernel, h.device)[(T,)](h, y, weight, normed, x, float(alpha), float(beta), float(eps),
                                                    N, **_launch_args(h.device, N))
    return normed, x


def silu_mul(gate_up):
    _rows(gate_up)
    T, two_i = gate_up.shape
    out = torch.empty(T, two_i // 2, dtype=gate_up.dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(two_i // 2))
    as_kernel(_silu_mul_kernel, gate_up.device)[(T, triton.cdiv(two_i // 2, block))](
        gate_up, out, two_i // 2, gate_up.stride(0), BLOCK=block)
    return out


def router_topk(logits, top_k: int, dtype):
    _rows(logits)
    T, E = logits.shape
    if not 1 <= top_k <= E or logits.dtype != torch.float32:
        raise ValueError(f"logits must be fp32 [T, E] with 1 <= top_k <= E, got {logits.dtype}, k={top_k}, E={E}")
    weights = torch.empty(T, top_k, dtype=dtype, device=logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int64, device=logits.device)
    as_kernel(_router_kernel, logits.device)[(T,)](logits, weights, ids, E, logits.stride(0), TOP_K=top_k,
                                                   EP=triton.next_power_of_2(E),
                                                   KP=triton.next_power_of_2(top_k))
    return weights, ids


def _gate_norm(o, gate, weight, eps, norm):
    _rows(o, n=weight.shape[0])
    if gate.shape != o.shape or gate.stride(-1) != 1:
        raise ValueError(f"gate must be {tuple(o.shape)} with a contiguous last dim, got {tuple(gate.shape)}")
    T, N = o.shape
    out = torch.empty_like(o)
    sum_sq = torch.empty(T, 1, dtype=torch.float32, device=o.device)
    as_kernel(_gate_norm_kernel, o.device)[(T,)](o, gate, weight, out, sum_sq, float(eps), N, gate.stride(0),
                                                 NORM=norm, **_launch_args(o.device, N))
    return out, sum_sq


def lightning_gate_norm(o, gate, weight, eps: float):
    return _gate_norm(o, gate, weight, eps, True)[0]


def lightning_gate_partial(o, gate, weight):
    return _gate_norm(o, gate, weight, 0.0, False)


def rms_scale(reduced, inner: int, eps: float, dtype):
    _rows(reduced)
    T, N = reduced.shape[0], reduced.shape[1] - 1
    if reduced.dtype != torch.float32:
        raise ValueError("the all-reduced tensor must be fp32 [T, H + 1]")
    out = torch.empty(T, N, dtype=dtype, device=reduced.device)
    as_kernel(_rms_scale_kernel, reduced.device)[(T,)](reduced, out, float(inner), float(eps), N,
                                                       BLOCK=triton.next_power_of_2(N))
    return out
