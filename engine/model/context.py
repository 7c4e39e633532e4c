"""Per-step forward metadata: which sequences are in the packed batch and where their cache lives.

Built only by the model runner; layers read it. Token tensors are packed over sequences ([T, ...]).
"""
from dataclasses import dataclass

import torch


@dataclass
class ForwardContext:
    positions: torch.Tensor      # [T] long: absolute position of each new token
    cu_seqlens: torch.Tensor     # [N+1] int32: new-token boundaries of the N sequences
    state_slots: torch.Tensor    # [N] long: lightning-state slot of each sequence
    slot_mapping: torch.Tensor   # [T] long: KV-cache row each new token is written to
    kv_rows: list[torch.Tensor]  # N x [context_len] long: KV rows of each sequence's whole context, in order
    is_decode: bool              # every sequence has exactly one new token and a past
    bounds: list[int] | None = None  # cu_seqlens on the host (layers that loop over sequences need no sync)

    @property
    def num_seqs(self) -> int:
        return len(self.kv_rows)
