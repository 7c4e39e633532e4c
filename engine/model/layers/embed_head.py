"""Vocab-parallel embedding and LM head: each rank holds ceil(V/N) rows of the vocabulary (zero padding at the end).

The embedding looks up the ids it owns and all-reduces; the head computes its slice of the logits and gathers them
on rank 0. MiniMax moved the head to fp32 because bf16 logits drifted: what matters is fp32 activations and fp32
accumulation, so a bf16 model keeps the checkpoint's bf16 head weights (half the bytes read per step) and computes
fp32(w) . h in fp32 (kernels/fused/lm_head.py); other dtypes keep an fp32 head (the CPU reference).
"""
import torch
from torch import nn

from kernels.fused import lm_head_logits

from ..tp_group import TPGroup
from .param import Source, fill, make_param


def vocab_rows(vocab_size: int, tp: TPGroup) -> tuple[int, int, int]:
    """(start, rows held, rows that exist in the checkpoint) of this rank's vocabulary shard."""
    per_rank = -(-vocab_size // tp.size)
    start = tp.rank * per_rank
    return start, per_rank, max(0, min(per_rank, vocab_size - start))


class VocabShard(nn.Module):
    def __init__(self, vocab_size: int, hidden: int, tp: TPGroup, dtype, device=None):
        super().__init__()
        self.vocab_size, self.tp = vocab_size, tp
        self.start, rows, self.real_rows = vocab_rows(vocab_size, tp)
        self.weight = make_param((rows, hidden), dtype, device, self._load)
        if rows > self.real_rows:
            self.weight.data[self.real_rows:].zero_()

    def _load(self, param, src: Source, shard=None) -> None:
        if tuple(src.shape) != (self.vocab_size, param.shape[1]):
            raise src.fail(f"shape {tuple(src.shape)} does not match the expected {(self.vocab_size, param.shape[1])}")
        fill(param, param.data[:self.real_rows], src, slice(self.start, self.start + self.real_rows))
        param.loaded_numel += (param.shape[0] - self.real_rows) * param.shape[1]  # padding rows are zeros


class VocabParallelEmbedding(VocabShard):
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return self.weight[ids]
        local = ids - self.start
        owned = (local >= 0) & (local < self.real_rows)
        x = self.weight[local.clamp(0, self.weight.shape[0] - 1)] * owned[:, None].to(self.weight.dtype)
        return self.tp.all_reduce(x)


def head_dtype(model_dtype: torch.dtype) -> torch.dtype:
    return torch.bfloat16 if model_dtype == torch.bfloat16 else torch.float32


class ParallelLMHead(VocabShard):
    def __init__(self, vocab_size: int, hidden: int, tp: TPGroup, device=None, dtype=torch.float32):
        super().__init__(vocab_size, hidden, tp, head_dtype(dtype), device)

    def local_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """This rank's fp32 logits [T, V/N] (padding columns included): no collective, graph-capturable."""
        if self.weight.dtype == torch.bfloat16:
            return lm_head_logits(hidden, self.weight)
        return hidden.float() @ self.weight.t()

    def gather(self, local: torch.Tensor) -> torch.Tensor | None:
        """Every rank's slice gathered on rank 0 and cut to the vocabulary (None on other ranks)."""
        logits = self.tp.gather_last_dim(local)
        return None if logits is None else logits[:, :self.vocab_size]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """fp32 logits [T, V] on rank 0 (None on other ranks)."""
        return self.gather(self.local_logits(hidden))
