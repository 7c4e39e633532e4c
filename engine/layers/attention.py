"""M1's softmax attention layer: GQA with partial RoPE over a paged KV cache (rows addressed per token)."""
import torch
import torch.nn.functional as F
from torch import nn

from ..context import ForwardContext
from .linear import Linear
from .rotary import PartialRotary

QUERY_ROWS_PER_CALL = 4096  # bounds the [rows, context] mask of a long chunk against a long history


class SoftmaxAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, dtype, device)
        self.k_proj = Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, dtype, device)
        self.v_proj = Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, dtype, device)
        self.o_proj = Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, dtype, device)
        self.rotary = PartialRotary(cfg.rotary_dim, cfg.rope_theta)
        self.k_cache: torch.Tensor | None = None  # [rows, KVH, D], bound by the model cache
        self.v_cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        T = x.shape[0]
        q = self.q_proj(x).view(T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(T, self.num_kv_heads, self.head_dim)
        cos, sin = self.rotary.cos_sin(ctx.positions)
        q, k = self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)
        self.k_cache[ctx.slot_mapping] = k.to(self.k_cache.dtype)
        self.v_cache[ctx.slot_mapping] = v.to(self.v_cache.dtype)
        out = torch.empty_like(q)
        bounds = ctx.cu_seqlens.tolist()
        for b, rows in enumerate(ctx.kv_rows):
            lo, hi = bounds[b], bounds[b + 1]
            out[lo:hi] = self._attend(q[lo:hi], self.k_cache[rows], self.v_cache[rows])
        return self.o_proj(out.reshape(T, -1))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [n, H, D] are the last n of a context of k, v [ctx, KVH, D] rows; causal."""
        n, ctx_len = q.shape[0], k.shape[0]
        k, v = k.transpose(0, 1).to(q.dtype), v.transpose(0, 1).to(q.dtype)
        out = torch.empty_like(q)
        for start in range(0, n, QUERY_ROWS_PER_CALL):
            stop = min(n, start + QUERY_ROWS_PER_CALL)
            qpos = torch.arange(ctx_len - n + start, ctx_len - n + stop, device=q.device)
            mask = torch.arange(ctx_len, device=q.device)[None, :] <= qpos[:, None]
            o = F.scaled_dot_product_attention(q[start:stop].transpose(0, 1), k, v, attn_mask=mask,
                                               scale=self.head_dim ** -0.5, enable_gqa=True)
            out[start:stop] = o.transpose(0, 1)
        return out
