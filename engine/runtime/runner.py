"""The only place where sequences become tensors: packs a step's sequences, runs the model, returns logits.

A sequence with no past (`past_len == 0`) starts from a zero lightning state: the runner clears its slot, so under
tensor parallelism every rank clears its own shard without a separate call."""
from dataclasses import dataclass

import torch

from .cache import ModelCache
from ..model.context import ForwardContext


@dataclass
class StepItem:
    """One sequence in a step: its new tokens, how many tokens it already has in cache, and where that cache is."""
    new_tokens: list[int]
    past_len: int
    slot: int
    block_table: list[int]


class ModelRunner:
    def __init__(self, model, cache: ModelCache, device):
        self.model, self.cache, self.device = model, cache, torch.device(device)
        cache.bind(model)

    def build_context(self, items: list[StepItem]) -> tuple[torch.Tensor, ForwardContext]:
        ids, positions, slot_mapping, kv_rows, cu = [], [], [], [], [0]
        for it in items:
            n, total = len(it.new_tokens), it.past_len + len(it.new_tokens)
            rows = self.cache.rows(it.block_table, total)
            ids += it.new_tokens
            positions.append(torch.arange(it.past_len, total))
            slot_mapping.append(rows[it.past_len:])
            kv_rows.append(rows.to(self.device))
            cu.append(cu[-1] + n)
        dev = self.device
        ctx = ForwardContext(
            positions=torch.cat(positions).to(dev),
            cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=dev),
            state_slots=torch.tensor([it.slot for it in items], dtype=torch.long, device=dev),
            slot_mapping=torch.cat(slot_mapping).to(dev),
            kv_rows=kv_rows,
            is_decode=all(len(it.new_tokens) == 1 and it.past_len > 0 for it in items),
            bounds=cu,
        )
        return torch.tensor(ids, dtype=torch.long, device=dev), ctx

    @torch.inference_mode()
    def run(self, items: list[StepItem], all_logits: bool = False) -> torch.Tensor | None:
        """Forward one step. Returns fp32 logits of each sequence's last token [N, V] (or of every token [T, V]);
        None on tensor-parallel ranks other than 0."""
        for it in items:
            if it.past_len == 0:
                self.cache.clear_slot(it.slot)
        ids, ctx = self.build_context(items)
        hidden = self.model(ids, ctx)
        if not all_logits:
            hidden = hidden[ctx.cu_seqlens[1:].long() - 1]
        return self.model.compute_logits(hidden)
