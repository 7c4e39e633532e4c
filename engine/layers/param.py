"""Parameters that know how to load themselves from a checkpoint tensor (the nano-vllm `weight_loader` pattern).

A loader receives a `Source` (one checkpoint tensor, read lazily so a rank can read only its slice) and a shard id,
copies what it owns into the parameter, and counts the elements it filled so the loader can prove completeness.
"""
from dataclasses import dataclass
from typing import Any, Callable

import torch


class WeightError(ValueError):
    """A checkpoint tensor that does not fit the model: the message names the tensor and its file."""


@dataclass
class Source:
    """One tensor in a safetensors file; `read(index)` loads only the requested slice."""
    name: str
    file: str
    shape: tuple[int, ...]
    reader: Any  # a safetensors slice or a tensor

    def read(self, *index) -> torch.Tensor:
        part = self.reader[index] if index else self.reader[:]
        return part if isinstance(part, torch.Tensor) else torch.as_tensor(part)

    def fail(self, why: str) -> "WeightError":
        return WeightError(f"tensor '{self.name}' in {self.file}: {why}")


def make_param(shape, dtype, device, loader: Callable | None = None) -> torch.nn.Parameter:
    """An uninitialised parameter with a weight loader (default: whole-tensor copy with a shape check)."""
    p = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device), requires_grad=False)
    p.weight_loader = loader or copy_loader
    p.loaded_numel = 0
    return p


def fill(param: torch.nn.Parameter, target: torch.Tensor, src: Source, *index) -> None:
    """Copy `src.read(*index)` into `target` (a view of `param`), checking the shape, and count the elements."""
    data = src.read(*index)
    if tuple(data.shape) != tuple(target.shape):
        raise src.fail(f"shape {tuple(data.shape)} does not match the expected {tuple(target.shape)}")
    target.copy_(data)
    param.loaded_numel += target.numel()


def copy_loader(param: torch.nn.Parameter, src: Source, shard: Any = None) -> None:
    if tuple(src.shape) != tuple(param.shape):
        raise src.fail(f"shape {tuple(src.shape)} does not match the expected {tuple(param.shape)}")
    fill(param, param.data, src)
