"""RMSNorm as M1 computes it: statistics in fp32, weight applied after casting back (`w * x_norm.to(dtype)`)."""
import torch
from torch import nn

from .param import make_param


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype, device=None):
        super().__init__()
        self.eps = eps
        self.weight = make_param((size,), dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)
