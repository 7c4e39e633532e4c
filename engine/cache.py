"""The model's per-sequence memory: lightning states (fixed size, fp32) in slots, and the softmax KV cache in
fixed-size blocks of token rows. Tensors only; which slot/blocks a sequence owns is bookkeeping kept elsewhere."""
import torch

from .config import ModelConfig


class ModelCache:
    def __init__(self, cfg: ModelConfig, num_slots: int, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device=None):
        H, D = cfg.num_heads, cfg.head_dim
        self.block_size, self.num_slots, self.num_blocks = block_size, num_slots, num_blocks
        self.states = {l: torch.zeros(num_slots, H, D, D, dtype=torch.float32, device=device)
                       for l in cfg.lightning_layers}
        rows = num_blocks * block_size
        self.keys = {l: torch.zeros(rows, cfg.num_kv_heads, D, dtype=dtype, device=device) for l in cfg.softmax_layers}
        self.values = {l: torch.zeros(rows, cfg.num_kv_heads, D, dtype=dtype, device=device) for l in cfg.softmax_layers}

    @staticmethod
    def bytes_per_slot(cfg: ModelConfig) -> int:
        return len(cfg.lightning_layers) * cfg.num_heads * cfg.head_dim ** 2 * 4

    @staticmethod
    def bytes_per_token(cfg: ModelConfig, dtype: torch.dtype) -> int:
        return len(cfg.softmax_layers) * 2 * cfg.num_kv_heads * cfg.head_dim * torch.finfo(dtype).bits // 8

    def bind(self, model) -> None:
        """Point every attention layer at its cache tensors."""
        for i, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            if i in self.states:
                attn.state_pool = self.states[i]
            else:
                attn.k_cache, attn.v_cache = self.keys[i], self.values[i]

    def rows(self, block_table: list[int], num_tokens: int, device=None) -> torch.Tensor:
        """KV rows of the first `num_tokens` tokens of a sequence that owns `block_table`."""
        blocks = torch.tensor(block_table, dtype=torch.long)
        rows = (blocks[:, None] * self.block_size + torch.arange(self.block_size)[None, :]).flatten()
        return rows[:num_tokens].to(device)

    def clear_slot(self, slot: int) -> None:
        for s in self.states.values():
            s[slot].zero_()

    def snapshot(self, slot: int, rows: torch.Tensor, device=None) -> dict:
        """Copy a sequence's whole state (lightning states + KV of `rows`) out of the pools."""
        return {
            "states": {l: s[slot].to(device, copy=True) for l, s in self.states.items()},
            "keys": {l: k[rows].to(device, copy=True) for l, k in self.keys.items()},
            "values": {l: v[rows].to(device, copy=True) for l, v in self.values.items()},
        }

    def restore(self, snap: dict, slot: int, rows: torch.Tensor) -> None:
        """Write a snapshot back into a slot and the given KV rows (bit-identical copy)."""
        for l, s in self.states.items():
            s[slot].copy_(snap["states"][l])
        for l in self.keys:
            self.keys[l][rows] = snap["keys"][l].to(self.keys[l].device)
            self.values[l][rows] = snap["values"][l].to(self.values[l].device)
