"""M1's sparse MoE block: fp32 softmax router -> top-k -> renormalise; SiLU-gated experts stored stacked.

Experts live in two stacked parameters, w13 [E, 2I, H] (w1 rows then w3 rows, as the -hf `gate_up_proj`) and
w2 [E, H, I]; the official per-expert tensors load into slices of them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .param import Source, fill, make_param


class SparseMoE(nn.Module):
    def __init__(self, cfg, dtype: torch.dtype, device=None):
        super().__init__()
        E, H, I = cfg.num_experts, cfg.hidden_size, cfg.intermediate_size
        self.top_k, self.intermediate = cfg.top_k, I
        self.gate = nn.Module()
        self.gate.weight = make_param((E, H), torch.float32, device)
        self.w13 = make_param((E, 2 * I, H), dtype, device, self._load_w13)
        self.w2 = make_param((E, H, I), dtype, device, self._load_w2)

    def _load_w13(self, param, src: Source, shard) -> None:
        kind, e = shard
        I = self.intermediate
        if kind == "gate_up":
            fill(param, param.data, src)
        else:
            fill(param, param.data[e, :I] if kind == "w1" else param.data[e, I:], src)

    def _load_w2(self, param, src: Source, shard) -> None:
        kind, e = shard
        fill(param, param.data if kind == "down" else param.data[e], src)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, H] -> (weights [T, k] in x.dtype, expert ids [T, k])."""
        probs = torch.softmax(x.float() @ self.gate.weight.t(), dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        return (weights / weights.sum(-1, keepdim=True)).to(x.dtype), ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.route(x)
        out = torch.zeros_like(x)
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        counts = torch.bincount(flat, minlength=self.w13.shape[0]).tolist()
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            picks = order[start:start + n]
            start += n
            tokens = picks // self.top_k
            gate_up = x[tokens] @ self.w13[e].t()
            y = (F.silu(gate_up[:, :self.intermediate]) * gate_up[:, self.intermediate:]) @ self.w2[e].t()
            out.index_add_(0, tokens, y * weights.flatten()[picks, None])
        return out
