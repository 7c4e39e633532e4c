"""Fused MoE (M1's SiLU-gated experts, top-k routed) for bf16/fp32 activations with bf16 or int8 weights.

`impl="torch"`: the reference loop of naive.py (CPU). `impl="triton"`: routing sorted by expert, then a grouped
GEMM for prefill-sized batches (fused.py) and, for T <= 64 tokens, the graph-capturable weight-streaming kernels of
gemv.py (all selected experts per launch, SiLU*up fused, split-K). Shapes in naive.py.
"""
import torch

from . import naive

__all__ = ["fused_moe", "naive"]


def _check(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale):
    E, two_i, H = w13.shape
    if x.dim() != 2 or x.shape[1] != H:
        raise ValueError(f"x must be [T, {H}], got {tuple(x.shape)}")
    if tuple(w2.shape) != (E, H, two_i // 2):
        raise ValueError(f"w2 must be [{E}, {H}, {two_i // 2}] to match w13 {tuple(w13.shape)}, got {tuple(w2.shape)}")
    if topk_ids.shape != topk_weights.shape or topk_ids.shape[0] != x.shape[0]:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} must be [T, k]")
    if (w13.dtype == torch.int8) != (w13_scale is not None) or (w2.dtype == torch.int8) != (w2_scale is not None):
        raise ValueError("int8 weights need their scales (and only int8 weights take scales)")


def fused_moe(x, w13, w2, topk_weights, topk_ids, w13_scale=None, w2_scale=None, impl: str = "torch") -> torch.Tensor:
    """MoE output [T, H] in x.dtype; see naive.py for the math and shapes."""
    _check(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale)
    if impl == "torch":
        return naive.fused_moe(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale)
    if impl == "triton":
        from .fused import triton_fused_moe
        return triton_fused_moe(x, w13, w2, topk_weights, topk_ids, w13_scale, w2_scale)
    raise ValueError(f"impl must be 'torch' or 'triton', got {impl!r}")
