"""Bias-free linear layers whose weights load (and shard) themselves.

`Linear` is replicated. `ColumnParallelLinear` keeps a contiguous block of output rows (heads, kv heads) on this
rank; `RowParallelLinear` keeps a block of input columns and returns this rank's partial sum, all-reduced unless the
caller fuses the reduction with its own (`reduce=False`).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..tp_group import TPGroup
from .param import make_param, slice_loader


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.weight = make_param((out_features, in_features), dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class ColumnParallelLinear(Linear):
    """Output rows [start, start + count) of a [out_features, in_features] weight."""

    def __init__(self, in_features: int, out_features: int, start: int, count: int, dtype, device=None):
        super().__init__(in_features, count, dtype, device)
        self.weight.weight_loader = slice_loader(0, start, out_features)


class RowParallelLinear(Linear):
    """Input columns [start, start + count) of a [out_features, in_features] weight; forward sums over ranks."""

    def __init__(self, in_features: int, out_features: int, start: int, count: int, tp: TPGroup, dtype,
                 device=None, reduce: bool = True):
        super().__init__(count, out_features, dtype, device)
        self.weight.weight_loader = slice_loader(1, start, in_features)
        self.tp, self.reduce = tp, reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        return self.tp.all_reduce(y) if self.reduce else y
