"""PyTorch reference of paged decode attention: one query token per sequence against its paged KV, in fp32.

A plain loop over sequences: gather the context's rows through the block table, softmax(q k^T * scale) v per
query head, query head h reading kv head h // (H // KVH). Rows with seq_len 0 are padding and give zeros.
"""
import torch


def context_rows(block_table: torch.Tensor, seq_len: int, block_size: int) -> torch.Tensor:
    """Cache rows of the first `seq_len` tokens of a sequence that owns `block_table` (in token order)."""
    tok = torch.arange(seq_len, device=block_table.device)
    return block_table.long()[tok // block_size] * block_size + tok % block_size


def paged_decode_attention_ref(q, k_cache, v_cache, block_tables, seq_lens, block_size, scale) -> torch.Tensor:
    """q [N, H, D]; k_cache, v_cache [rows, KVH, D]; block_tables [N, max_blocks]; seq_lens [N].

    Returns [N, H, D] in q.dtype (computed in fp32)."""
    N, H, D = q.shape
    group = H // k_cache.shape[1]
    out = torch.zeros(N, H, D, dtype=torch.float32, device=q.device)
    for n in range(N):
        length = int(seq_lens[n])
        if length == 0:
            continue
        rows = context_rows(block_tables[n], length, block_size)
        k = k_cache[rows].float().repeat_interleave(group, dim=1)  # [L, H, D]
        v = v_cache[rows].float().repeat_interleave(group, dim=1)
        scores = torch.einsum("hd,lhd->hl", q[n].float(), k) * scale
        out[n] = torch.einsum("hl,lhd->hd", scores.softmax(-1), v)
    return out.to(q.dtype)
