"""The model's per-sequence memory: lightning states (fixed size, fp32) in slots, and the softmax KV cache in
fixed-size blocks of token rows, and the handles of state copied out of them (snapshots). Tensors only; which
slot/blocks a sequence owns is bookkeeping kept elsewhere. One extra block past `num_blocks` is scratch: the padding
rows of a replayed decode graph write their K/V there (`scratch_row`), never into a sequence's blocks."""
from dataclasses import dataclass

import torch

from ..model.config import ModelConfig


@dataclass
class DeviceSnap:
    """A snapshot kept on the device: copied lightning states, KV left in place in `blocks` (held by a ref)."""
    states: dict
    blocks: list[int]
    num_tokens: int


@dataclass
class HostSnap:
    """A snapshot copied to host memory: lightning states and the KV rows of its tokens, per layer."""
    states: dict
    keys: dict
    values: dict


class ModelCache:
    def __init__(self, cfg: ModelConfig, num_slots: int, num_blocks: int, block_size: int,
                 dtype: torch.dtype, device=None):
        H, D = cfg.num_heads, cfg.head_dim
        self.block_size, self.num_slots, self.num_blocks = block_size, num_slots, num_blocks
        self.states = {l: torch.zeros(num_slots, H, D, D, dtype=torch.float32, device=device)
                       for l in cfg.lightning_layers}
        rows = (num_blocks + 1) * block_size
        self.scratch_row = num_blocks * block_size
        self.keys = {l: torch.zeros(rows, cfg.num_kv_heads, D, dtype=dtype, device=device) for l in cfg.softmax_layers}
        self.values = {l: torch.zeros(rows, cfg.num_kv_heads, D, dtype=dtype, device=device) for l in cfg.softmax_layers}
        self.device = torch.device(device or "cpu")
        self.device_type = self.device.type
        self.slot_bytes = self.bytes_per_slot(cfg)
        self.token_bytes = self.bytes_per_token(cfg, dtype)

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
        return rows[:num_tokens].to(device or self.device)

    def clear_slot(self, slot: int) -> None:
        for s in self.states.values():
            s[slot].zero_()

    def write_slot(self, slot: int, states: dict) -> None:
        """Overwrite every lightning layer's state in `slot` (bit-identical copy)."""
        for l, s in self.states.items():
            s[slot].copy_(states[l])

    def read_rows(self, rows: torch.Tensor) -> tuple[dict, dict]:
        """Copies of the softmax KV at `rows`, per layer."""
        return {l: k[rows] for l, k in self.keys.items()}, {l: v[rows] for l, v in self.values.items()}

    def write_rows(self, rows: torch.Tensor, keys: dict, values: dict) -> None:
        for l in self.keys:
            self.keys[l][rows] = keys[l].to(self.keys[l].device)
            self.values[l][rows] = values[l].to(self.values[l].device)

    def copy_rows(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """KV of rows `src` copied to rows `dst` (restoring a snapshot whose blocks stay on the device)."""
        for l in self.keys:
            self.keys[l][dst] = self.keys[l][src]
            self.values[l][dst] = self.values[l][src]
