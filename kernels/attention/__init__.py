"""Softmax attention over the paged KV cache: decode (one new query per sequence, decode.py) and chunked prefill
(causal lower-right, prefill.py), each beside its PyTorch reference.

Decode:

Shapes (the engine's cache layout, engine/cache.py):
- q            [N, H, D]  bf16 / fp16 / fp32, last dim contiguous;
- k_cache,
  v_cache      [num_blocks * block_size, KVH, D]; token t of a sequence lives at row
               block_tables[n, t // block_size] * block_size + t % block_size; last dim contiguous;
- block_tables [N, max_blocks] int32 (entries past a sequence's length are never read, may hold anything);
- seq_lens     [N] int32: context length INCLUDING the new token (already written to the cache); 0 = padding
               row (output zeros, nothing read);
- H % KVH == 0: query head h reads kv head h // (H // KVH); D a power of two >= 16; block_size >= 1.
Returns `out` [N, H, D] in q.dtype (fp32 softmax and accumulation). CUDA-graph capturable: the split count comes
from static shapes (`max_seq_len` caps it; default: the longest context the block table can address).
`impl="torch"` runs the fp32 reference loop (naive.py); `"triton"` the flash-decoding kernels (decode.py; on CPU
tensors through Triton's interpreter).
"""
import torch

from .naive import paged_decode_attention_ref
from .naive_prefill import paged_prefill_attention_ref
from .prefill import paged_prefill_attention

__all__ = ["paged_decode_attention", "paged_decode_attention_ref", "paged_prefill_attention",
           "paged_prefill_attention_ref"]

FLOATS = (torch.bfloat16, torch.float16, torch.float32)


def _check(q, k_cache, v_cache, block_tables, seq_lens, block_size):
    if q.dim() != 3 or q.dtype not in FLOATS:
        raise ValueError(f"q must be [N, H, D] in bf16/fp16/fp32, got {q.dtype} {tuple(q.shape)}")
    N, H, D = q.shape
    if k_cache.dim() != 3 or k_cache.shape != v_cache.shape or k_cache.shape[2] != D:
        raise ValueError(f"k_cache and v_cache must both be [rows, KVH, {D}], got {tuple(k_cache.shape)} and "
                         f"{tuple(v_cache.shape)}")
    KVH = k_cache.shape[1]
    if H % KVH:
        raise ValueError(f"query heads ({H}) must be a multiple of kv heads ({KVH})")
    if D < 16 or D & (D - 1):
        raise ValueError(f"head dim must be a power of two >= 16, got {D}")
    if block_tables.dim() != 2 or block_tables.shape[0] != N or block_tables.dtype != torch.int32:
        raise ValueError(f"block_tables must be int32 [{N}, max_blocks], got {block_tables.dtype} "
                         f"{tuple(block_tables.shape)}")
    if tuple(seq_lens.shape) != (N,) or seq_lens.dtype != torch.int32:
        raise ValueError(f"seq_lens must be int32 [{N}], got {seq_lens.dtype} {tuple(seq_lens.shape)}")
    if block_size < 1 or k_cache.shape[0] % block_size:
        raise ValueError(f"block_size must be >= 1 and divide the cache rows ({k_cache.shape[0]}), got {block_size}")
    if q.stride(-1) != 1 or k_cache.stride(-1) != 1 or v_cache.stride(-1) != 1 or block_tables.stride(-1) != 1:
        raise ValueError("q, k_cache, v_cache and block_tables need a contiguous last dim")
    tensors = (q, k_cache, v_cache, block_tables, seq_lens)
    if len({t.device for t in tensors}) != 1:
        raise ValueError("all tensors must be on one device")


def paged_decode_attention(q, k_cache, v_cache, block_tables, seq_lens, block_size: int, scale: float,
                           num_splits: int | None = None, out: torch.Tensor | None = None,
                           max_seq_len: int | None = None, impl: str = "triton") -> torch.Tensor:
    """softmax(q k^T * scale) v over each sequence's paged context; see the module docstring for shapes."""
    _check(q, k_cache, v_cache, block_tables, seq_lens, block_size)
    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be {q.dtype} {tuple(q.shape)} with a contiguous last dim")
    if impl == "torch":
        out.copy_(paged_decode_attention_ref(q, k_cache, v_cache, block_tables, seq_lens, block_size, scale))
        return out
    if impl != "triton":
        raise ValueError(f"impl must be 'torch' or 'triton', got {impl!r}")
    from .decode import choose_num_splits, triton_paged_decode_attention
    if num_splits is None:
        longest = max_seq_len if max_seq_len is not None else block_tables.shape[1] * block_size
        num_splits = choose_num_splits(q.shape[0], k_cache.shape[1], longest, q.device)
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1, got {num_splits}")
    return triton_paged_decode_attention(q, k_cache, v_cache, block_tables, seq_lens, block_size, scale,
                                         num_splits, out)
