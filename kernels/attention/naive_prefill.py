"""PyTorch reference of paged chunked-prefill attention (the contract of prefill.py), explicit fp32 math.

Per sequence: gather its L context rows through the block table, expand kv heads to the query heads, scores in fp32,
lower-right aligned causal mask (query i of n sees keys j <= L - n + i), softmax, weighted sum, cast to q.dtype.
"""
import torch


def context_rows(block_table: torch.Tensor, num_tokens: int, block_size: int) -> torch.Tensor:
    """Cache rows (int64) of the first `num_tokens` tokens of a sequence that owns `block_table`."""
    j = torch.arange(num_tokens, device=block_table.device)
    return block_table.long()[j // block_size] * block_size + j % block_size


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q [n, H, D] the last n positions of a context with k, v [L, KVH, D]; returns fp32 [n, H, D]."""
    n, H, _ = q.shape
    L, KVH, _ = k.shape
    k = k.float().repeat_interleave(H // KVH, 1)
    v = v.float().repeat_interleave(H // KVH, 1)
    s = torch.einsum("nhd,lhd->hnl", q.float(), k) * scale
    visible = torch.arange(L, device=q.device)[None, :] <= (L - n + torch.arange(n, device=q.device))[:, None]
    s = s.masked_fill(~visible, float("-inf"))
    return torch.einsum("hnl,lhd->nhd", s.softmax(-1), v)


def paged_prefill_attention_ref(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens_k, block_size, scale,
                                max_seqlen_q=None, out=None):
    """Same arguments and result as prefill.paged_prefill_attention (max_seqlen_q is ignored)."""
    out = torch.empty_like(q) if out is None else out
    bounds, lens = cu_seqlens_q.tolist(), seq_lens_k.tolist()
    for b, L in enumerate(lens):
        lo, hi = bounds[b], bounds[b + 1]
        if hi == lo:
            continue
        rows = context_rows(block_tables[b], L, block_size)
        out[lo:hi] = attend_one(q[lo:hi], k_cache[rows], v_cache[rows], scale).to(out.dtype)
    return out
