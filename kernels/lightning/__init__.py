"""Lightning attention: public entry points and the dispatch between the PyTorch reference and Triton.

Convention: q, k, v [T, H, D] packed over sequences with cu_seqlens [N+1] (int32); states [N, H, D, D] fp32;
slopes [H] fp32 (see decay.py). `impl="torch"` is the reference path used on CPU; `impl="triton"` runs the
Triton kernels (on CUDA, or on CPU tensors under TRITON_INTERPRET=1), the prefill variant named by TRITON_PREFILL;
`impl="triton:<spec>"` names another prefill variant (variants.py).
"""
import torch

from . import naive
from .decay import base_slopes, layer_slopes

__all__ = ["lightning_prefill", "lightning_decode", "layer_slopes", "base_slopes", "default_impl"]

# The Triton prefill the engine runs (a variants.py spec); bench/lightning_prefill.py prints the line to put here.
TRITON_PREFILL = "chunk"


def default_impl(device: torch.device) -> str:
    """The engine's choice: Triton on CUDA, the PyTorch reference elsewhere."""
    return "triton" if torch.device(device).type == "cuda" else "torch"


def _check(q, k, v, slopes):
    if q.dim() != 3 or q.shape != k.shape or q.shape[:2] != v.shape[:2]:
        raise ValueError(f"q, k, v must be [T, H, D] of equal shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if slopes.shape != (q.shape[1],):
        raise ValueError(f"slopes must be [H]={q.shape[1]}, got {tuple(slopes.shape)}")


def lightning_prefill(q, k, v, slopes, initial_state=None, cu_seqlens=None, impl="torch"):
    """Prefill packed sequences. Returns (o [T, H, D] in q.dtype, final_state [N, H, D, D] fp32)."""
    _check(q, k, v, slopes)
    if impl == "torch":
        return naive.prefill(q, k, v, slopes, initial_state, cu_seqlens)
    if impl == "triton" or impl.startswith("triton:"):
        from .variants import run_prefill
        spec = impl.partition(":")[2] or TRITON_PREFILL
        return run_prefill(spec, q, k, v, slopes, initial_state, cu_seqlens)
    raise ValueError(f"impl must be 'torch', 'triton' or 'triton:<variant>', got {impl!r}")


def lightning_decode(q, k, v, slopes, state_pool, slot_ids, impl="torch"):
    """One new token per sequence; state_pool [S, H, D, D] fp32 is updated in place. Returns o [B, H, D]."""
    _check(q, k, v, slopes)
    if impl == "torch":
        return naive.decode(q, k, v, slopes, state_pool, slot_ids)
    if impl == "triton" or impl.startswith("triton:"):
        from .recurrent import recurrent_decode
        return recurrent_decode(q, k, v, slopes, state_pool, slot_ids)
    raise ValueError(f"impl must be 'torch', 'triton' or 'triton:<variant>', got {impl!r}")
