"""M1's lightning (linear) attention layer: SiLU'd per-head-interleaved qkv, decayed state, norm, sigmoid gate."""
import torch
import torch.nn.functional as F
from torch import nn

from kernels.lightning import default_impl, layer_slopes, lightning_decode, lightning_prefill

from ..context import ForwardContext
from .linear import Linear
from .norm import RMSNorm


class LightningAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        inner = cfg.num_heads * cfg.head_dim
        self.qkv_proj = Linear(cfg.hidden_size, 3 * inner, dtype, device)
        self.output_gate = Linear(cfg.hidden_size, inner, dtype, device)
        self.out_proj = Linear(inner, cfg.hidden_size, dtype, device)
        self.norm = RMSNorm(inner, cfg.lightning_norm_eps, dtype, device)
        self.register_buffer("slopes", layer_slopes(cfg.num_heads, layer_idx, cfg.num_layers).to(device), persistent=False)
        self.impl = default_impl(device or "cpu")
        self.state_pool: torch.Tensor | None = None  # [slots, H, D, D] fp32, bound by the model cache

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        T = x.shape[0]
        qkv = F.silu(self.qkv_proj(x)).view(T, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        if ctx.is_decode:
            o = lightning_decode(q, k, v, self.slopes, self.state_pool, ctx.state_slots, impl=self.impl)
        else:
            init = self.state_pool[ctx.state_slots]
            o, final = lightning_prefill(q, k, v, self.slopes, init, ctx.cu_seqlens, impl=self.impl)
            self.state_pool[ctx.state_slots] = final
        o = self.norm(o.reshape(T, -1))
        o = torch.sigmoid(self.output_gate(x)) * o
        return self.out_proj(o)
