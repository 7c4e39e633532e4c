"""Bias-free linear layer whose weight loads itself (tensor-parallel variants slot in here later)."""
import torch
import torch.nn.functional as F
from torch import nn

from .param import make_param


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.weight = make_param((out_features, in_features), dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)
