"""Per-step forward metadata: which sequences are in the packed batch and where their cache lives.

Built only by the model runner (from its persistent step buffers); layers read it. Token tensors are packed over
sequences ([T, ...]). A decode step replayed from a CUDA graph carries padding rows: one token each, seq_len 0,
state slot -1 and a slot_mapping pointing at the cache's scratch row, so they read nothing and write nowhere.
"""
from dataclasses import dataclass

import torch


@dataclass
class ForwardContext:
    positions: torch.Tensor      # [T] long: absolute position of each new token
    cu_seqlens: torch.Tensor     # [N+1] int32: new-token boundaries of the N sequences
    state_slots: torch.Tensor    # [N] long: lightning-state slot of each sequence (-1: padding row)
    slot_mapping: torch.Tensor   # [T] long: KV-cache row each new token is written to
    block_tables: torch.Tensor   # [N, W] int32: KV blocks of each sequence (entries past its length unread)
    seq_lens: torch.Tensor       # [N] int32: context length of each sequence, new tokens included (0: padding)
    is_decode: bool              # every sequence has exactly one new token and a past
    bounds: list[int]            # cu_seqlens on the host (layers that loop over sequences need no sync)
    seq_lens_host: list[int]     # seq_lens on the host
    max_seq_len: int             # an upper bound of seq_lens (static for a captured graph)
    max_query_len: int           # the most new tokens of one sequence
    block_size: int

    @property
    def num_seqs(self) -> int:
        return len(self.bounds) - 1
