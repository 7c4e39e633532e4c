"""M1's softmax attention layer: GQA with partial RoPE over a paged KV cache (rows addressed per token).

`impl="triton"` (CUDA default): decode through the paged flash-decoding kernel (one launch for the whole batch,
graph-capturable), prefill chunks through the paged causal flash-attention kernel (kernels/attention). `impl="torch"`
(CPU default, and the reference / fallback on CUDA as `attention_impl="sdpa"`): SDPA per sequence over its rows.

Tensor parallel: q heads split in contiguous blocks; kv heads split too, or, with fewer kv heads than ranks,
each rank keeps the one kv head its q heads read (replicated). `o_proj` is row-parallel: one all-reduce.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.bias import causal_lower_right

from kernels.attention import paged_decode_attention, paged_prefill_attention

from ..context import ForwardContext
from ..tp_group import TPGroup
from .linear import ColumnParallelLinear, RowParallelLinear
from .rotary import PartialRotary

QUERY_ROWS_PER_CALL = 4096  # CPU: bounds the [rows, context] scores of a long chunk against a long history
CUDA_QUERY_ROWS = 1 << 15
MAX_SCORES_PER_CALL = 1 << 30  # SDPA with a mask and GQA may take the math path, which materialises [H, rows, ctx]


def kv_heads_of_rank(num_heads: int, num_kv_heads: int, tp: TPGroup) -> tuple[int, int]:
    """(first kv head, kv heads held) by this rank: a share when kv heads >= ranks, else one replicated head."""
    if num_kv_heads >= tp.size:
        return tp.split(num_kv_heads, "num_key_value_heads")
    if tp.size % num_kv_heads:
        raise ValueError(f"tensor_parallel_size={tp.size} must be a multiple of num_key_value_heads={num_kv_heads} "
                         "when it exceeds it")
    q_first, _ = tp.split(num_heads, "num_attention_heads")
    return q_first // (num_heads // num_kv_heads), 1


class SoftmaxAttention(nn.Module):
    def __init__(self, cfg, layer_idx: int, dtype: torch.dtype, device=None, tp: TPGroup | None = None):
        super().__init__()
        tp = tp or TPGroup()
        H, D = cfg.hidden_size, cfg.head_dim
        q_first, self.num_heads = tp.split(cfg.num_heads, "num_attention_heads")
        kv_first, self.num_kv_heads = kv_heads_of_rank(cfg.num_heads, cfg.num_kv_heads, tp)
        self.head_dim = D
        inner, kv = cfg.num_heads * D, cfg.num_kv_heads * D
        self.q_proj = ColumnParallelLinear(H, inner, q_first * D, self.num_heads * D, dtype, device)
        self.k_proj = ColumnParallelLinear(H, kv, kv_first * D, self.num_kv_heads * D, dtype, device)
        self.v_proj = ColumnParallelLinear(H, kv, kv_first * D, self.num_kv_heads * D, dtype, device)
        self.o_proj = RowParallelLinear(inner, H, q_first * D, self.num_heads * D, tp, dtype, device)
        self.rotary = PartialRotary(cfg.rotary_dim, cfg.rope_theta)
        self.k_cache: torch.Tensor | None = None  # [rows, local KVH, D], bound by the model cache
        self.v_cache: torch.Tensor | None = None
        self.impl = "triton" if torch.device(device or "cpu").type == "cuda" else "torch"

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        T = x.shape[0]
        q = self.q_proj(x).view(T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(T, self.num_kv_heads, self.head_dim)
        cos, sin = self.rotary.cos_sin(ctx.positions)
        q, k = self.rotary.apply(q, cos, sin), self.rotary.apply(k, cos, sin)
        self.k_cache[ctx.slot_mapping] = k.to(self.k_cache.dtype)
        self.v_cache[ctx.slot_mapping] = v.to(self.v_cache.dtype)
        scale = self.head_dim ** -0.5
        if self.impl == "triton" and ctx.is_decode:
            out = paged_decode_attention(q, self.k_cache, self.v_cache, ctx.block_tables, ctx.seq_lens,
                                         ctx.block_size, scale, max_seq_len=ctx.max_seq_len)
        elif self.impl == "triton":
            out = paged_prefill_attention(q, self.k_cache, self.v_cache, ctx.block_tables, ctx.cu_seqlens,
                                          ctx.seq_lens, ctx.block_size, scale, max_seqlen_q=ctx.max_query_len)
        else:
            out = self._sdpa(q, ctx)
        return self.o_proj(out.reshape(T, -1))

    def _sdpa(self, q: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """The reference: each sequence's rows gathered through its block table, SDPA over them (padding: zeros)."""
        out = torch.zeros_like(q)
        bs, offsets = ctx.block_size, torch.arange(ctx.block_size, device=q.device)
        for b, length in enumerate(ctx.seq_lens_host):
            if length == 0:
                continue
            blocks = ctx.block_tables[b, :-(-length // bs)].long()
            rows = (blocks[:, None] * bs + offsets[None, :]).flatten()[:length]
            lo, hi = ctx.bounds[b], ctx.bounds[b + 1]
            out[lo:hi] = self._attend(q[lo:hi], self.k_cache[rows], self.v_cache[rows])
        return out

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [n, H, D] are the last n of a context of k, v [ctx, KVH, D] rows; causal (lower-right aligned).

        On CUDA, kv heads are expanded so SDPA takes its flash/memory-efficient kernels (O(rows) memory even at a
        1M-token context); the CPU math path materialises [H, rows, ctx] scores, so its query rows are bounded."""
        n, ctx_len = q.shape[0], k.shape[0]
        k, v = k.transpose(0, 1).to(q.dtype), v.transpose(0, 1).to(q.dtype)
        gqa = self.num_heads != self.num_kv_heads
        if q.is_cuda and gqa:
            rep = self.num_heads // self.num_kv_heads
            k, v, gqa = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0), False
        qt, k, v = q.transpose(0, 1)[None], k[None], v[None]  # 4-D [1, H, L, D]: what the fused kernels take
        scale = self.head_dim ** -0.5
        if n == 1:
            return F.scaled_dot_product_attention(qt, k, v, scale=scale, enable_gqa=gqa)[0].transpose(0, 1)
        out = torch.empty_like(q)
        rows = CUDA_QUERY_ROWS if q.is_cuda else \
            max(16, min(QUERY_ROWS_PER_CALL, MAX_SCORES_PER_CALL // (self.num_heads * ctx_len)))
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            visible = ctx_len - n + stop
            o = F.scaled_dot_product_attention(qt[:, :, start:stop], k[:, :, :visible], v[:, :, :visible],
                                               attn_mask=causal_lower_right(stop - start, visible), scale=scale,
                                               enable_gqa=gqa)
            out[start:stop] = o[0].transpose(0, 1)
        return out
