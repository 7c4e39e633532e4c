"""PyTorch references of the fused decode-path ops, written the way the engine's modules compute them.

- add_rms_norm: x = alpha * h + beta * y (M1's residual with its layer's alpha/beta), then engine/layers/norm.py's
  RMSNorm of x: statistics in fp32, `weight * x_normed.to(dtype)`.
- silu_mul: F.silu(gate) * up over gate_up [T, 2I] (gate columns first).
- router_topk: engine/layers/moe.py's route after the gate matmul: fp32 softmax -> top-k -> renormalise -> dtype.
- lightning_gate_norm: engine/layers/lightning.py at TP1: sigmoid(gate) * RMSNorm(o) (norm over all heads).
- lightning_gate_partial / rms_scale: its TP>1 split around out_proj and the one all-reduce.
- lm_head_logits: fp32 logits of fp32 hidden states against the bf16 head weights, as an fp32 copy would give.
"""
import torch
import torch.nn.functional as F


def rms_norm(x, weight, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def add_rms_norm(h, y, weight, eps, alpha=1.0, beta=1.0):
    x = alpha * h + beta * y
    return rms_norm(x, weight, eps), x


def silu_mul(gate_up):
    inter = gate_up.shape[-1] // 2
    return F.silu(gate_up[:, :inter]) * gate_up[:, inter:]


def router_topk(logits, top_k, dtype):
    probs = torch.softmax(logits.float(), dim=-1)
    weights, ids = probs.topk(top_k, dim=-1)
    return (weights / weights.sum(-1, keepdim=True)).to(dtype), ids


def lightning_gate_norm(o, gate, weight, eps):
    return torch.sigmoid(gate) * rms_norm(o, weight, eps)


def lightning_gate_partial(o, gate, weight):
    sum_sq = o.float().pow(2).sum(-1, keepdim=True)
    return torch.sigmoid(gate) * (weight * o), sum_sq


def rms_scale(reduced, inner, eps, dtype):
    scale = torch.rsqrt(reduced[:, -1:] / inner + eps)
    return (reduced[:, :-1] * scale).to(dtype)


def lm_head_logits(hidden, weight):
    return hidden.float() @ weight.float().t()
