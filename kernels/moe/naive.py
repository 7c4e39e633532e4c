"""PyTorch reference of the fused MoE: a loop over experts, int8 weights dequantized by per-row scales.

Shapes: x [T, H]; w13 [E, 2I, H] (w1 rows then w3 rows); w2 [E, H, I]; topk_weights [T, k] (x.dtype);
topk_ids [T, k]; optional w13_scale [E, 2I], w2_scale [E, H] fp32 (int8 weights). Returns [T, H] in x.dtype:
sum_k weight_k * w2_e(SiLU(w1_e x) * w3_e x), accumulated in x.dtype as M1 does.
"""
import torch
import torch.nn.functional as F


def _expert_matmul(x: torch.Tensor, w: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """x [n, K] @ w [N, K]^T; with int8 w the dot products accumulate in fp32 and the fp32 row scale is applied
    before the one rounding to x.dtype (what the Triton kernel does)."""
    if scale is None:
        return x @ w.t()
    return ((x.float() @ w.t().float()) * scale.float()).to(x.dtype)


def fused_moe(x, w13, w2, topk_weights, topk_ids, w13_scale=None, w2_scale=None) -> torch.Tensor:
    inter = w2.shape[-1]
    top_k = topk_ids.shape[1]
    out = torch.zeros_like(x)
    flat = topk_ids.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=w13.shape[0]).tolist()
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        picks = order[start:start + n]
        start += n
        tokens = picks // top_k
        gate_up = _expert_matmul(x[tokens], w13[e], None if w13_scale is None else w13_scale[e])
        h = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
        y = _expert_matmul(h, w2[e], None if w2_scale is None else w2_scale[e])
        out.index_add_(0, tokens, y * topk_weights.flatten()[picks, None])
    return out
