"""Parameters that know how to load themselves from a checkpoint tensor (the nano-vllm `weight_loader` pattern).

A loader receives a `Source` (one checkpoint tensor, read lazily so a rank can read only its slice) and a shard id,
copies what it owns into the parameter, and counts the elements it filled so the loader can prove completeness.
`Source.bytes_read` counts what was actually read from the file, so tests can prove a tensor-parallel rank never
materialises a tensor it does not own.
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
    bytes_read: int = 0

    def read(self, *index) -> torch.Tensor:
        part = self.reader[index] if index else self.reader[:]
        part = part if isinstance(part, torch.Tensor) else torch.as_tensor(part)
        self.bytes_read += part.numel() * part.element_size()
        return part

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
    put(param, target, src, src.read(*index))


def put(param: torch.nn.Parameter, target: torch.Tensor, src: Source, data: torch.Tensor) -> None:
    """Copy already-read `data` into `target`, checking the shape, and count the elements."""
    if tuple(data.shape) != tuple(target.shape):
        raise src.fail(f"shape {tuple(data.shape)} does not match the expected {tuple(target.shape)}")
    target.copy_(data)
    param.loaded_numel += target.numel()


def copy_loader(param: torch.nn.Parameter, src: Source, shard: Any = None) -> None:
    if tuple(src.shape) != tuple(param.shape):
        raise src.fail(f"shape {tuple(src.shape)} does not match the expected {tuple(param.shape)}")
    fill(param, param.data, src)


def slice_loader(dim: int, start: int, full: int) -> Callable:
    """A loader that reads rows [start, start + param.shape[dim]) along `dim` of a tensor `full` long there."""
    def load(param: torch.nn.Parameter, src: Source, shard: Any = None) -> None:
        if len(src.shape) != param.dim() or src.shape[dim] != full:
            raise src.fail(f"shape {tuple(src.shape)} does not match the expected size {full} along dim {dim}")
        fill(param, param.data, src, *index_along(dim, start, param.shape[dim]))
    return load


def index_along(dim: int, start: int, size: int) -> tuple:
    """An index that takes [start, start + size) along `dim` and everything before it."""
    return (slice(None),) * dim + (slice(start, start + size),)
