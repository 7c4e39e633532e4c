"""Softmax attention kernels over the paged KV cache (Triton), each beside its PyTorch reference."""
from .naive_prefill import paged_prefill_attention_ref
from .prefill import paged_prefill_attention

__all__ = ["paged_prefill_attention", "paged_prefill_attention_ref"]
