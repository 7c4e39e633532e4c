"""M1's lightning (linear) attention layer: SiLU'd per-head-interleaved qkv, decayed state, norm, sigmoid gate.

Tensor parallel: each rank owns a contiguous block of heads. `qkv_proj` rows are interleaved per head
(rows h*3D..(h+1)*3D hold q_h, k_h, v_h), so a head block is a contiguous row block; `output_gate` and the norm
weight are sliced by heads, `out_proj` is row-parallel. The output RMSNorm runs over ALL heads; its per-token scale
commutes with the gate and `out_proj`, so each rank sends its partial `out_proj` output and its sum of squares in
ONE all-reduce, and the norm scale is applied afterwards.
"""
import torch
import torch.nn.functional as F
from torch import nn

from kernels.fused import lightning_gate_norm, lightning_gate_partial, rms_scale
from kernels.lightning import default_impl, layer_slopes, lightning_decode, lightning_prefill

from ..context import ForwardContext
from ..tp_group import TPGroup
from .linear import ColumnParallelLinear, RowParallelLinear
from .norm import RMSNorm
from .param import slice_loader


class LightningAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int, dtype: torch.dtype, device=None, tp: TPGroup | None = None):
        super().__init__()
        self.tp = tp = tp or TPGroup()
        D, H = cfg.head_dim, cfg.hidden_size
        first, self.num_heads = tp.split(cfg.num_heads, "num_attention_heads")
        self.head_dim, self.inner = D, cfg.num_heads * D
        self.eps = cfg.lightning_norm_eps
        local = self.num_heads * D
        self.qkv_proj = ColumnParallelLinear(H, 3 * self.inner, 3 * D * first, 3 * local, dtype, device)
        self.output_gate = ColumnParallelLinear(H, self.inner, D * first, local, dtype, device)
        self.out_proj = RowParallelLinear(self.inner, H, D * first, local, tp, dtype, device, reduce=False)
        self.norm = RMSNorm(local, self.eps, dtype, device)
        self.norm.weight.weight_loader = slice_loader(0, D * first, self.inner)
        slopes = layer_slopes(cfg.num_heads, layer_idx, cfg.num_layers)[first:first + self.num_heads]
        self.register_buffer("slopes", slopes.to(device), persistent=False)
        self.impl = default_impl(device or "cpu")
        self.state_pool: torch.Tensor | None = None  # [slots, local heads, D, D] fp32, bound by the model cache
        self.fused_gate = False  # decode: norm + sigmoid gate in one launch (kernels/fused)

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
        o = o.reshape(T, -1)
        if self.fused_gate and ctx.is_decode:
            return self._fused_output(x, o)
        if self.tp.size == 1:
            return self.out_proj(torch.sigmoid(self.output_gate(x)) * self.norm(o))
        return self._sharded_output(x, o)

    def _fused_output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        gate = self.output_gate(x)
        if self.tp.size == 1:
            return self.out_proj(lightning_gate_norm(o, gate, self.norm.weight, self.eps))
        partial, sum_sq = lightning_gate_partial(o, gate, self.norm.weight)
        both = self.tp.all_reduce(torch.cat([self.out_proj(partial).float(), sum_sq], dim=-1))
        return rms_scale(both, self.inner, self.eps, x.dtype)

    def _sharded_output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """norm over all heads -> gate -> out_proj, with the norm's sum of squares riding on out_proj's all-reduce."""
        sum_sq = o.float().pow(2).sum(-1, keepdim=True)
        partial = self.out_proj(torch.sigmoid(self.output_gate(x)) * (self.norm.weight * o))
        both = self.tp.all_reduce(torch.cat([partial.float(), sum_sq], dim=-1))
        scale = torch.rsqrt(both[:, -1:] / self.inner + self.eps)
        return (both[:, :-1] * scale).to(x.dtype)
