"""Where a Triton kernel runs: compiled for CUDA tensors, through Triton's interpreter for CPU tensors.

`triton.jit` builds an interpreted kernel only if `TRITON_INTERPRET=1` was set when the kernel's module was
imported. When it was not, `as_kernel` loads a second copy of that module with the variable set (nested jit
helpers must be interpreted too, including those it imports from other kernel modules: they are swapped for the
interpreted copies of theirs), so the CPU path never depends on import order.
"""
import functools
import importlib.util
import os
import sys

import torch
from triton.runtime.jit import JITFunction

CPU_SMS = 132  # plan CPU launches like an H100 so the interpreter exercises the same chunking


@functools.cache
def _interpreted_module(name: str):
    module = sys.modules[name]
    spec = importlib.util.spec_from_file_location(f"{name}_interpreted", module.__file__)
    copy = importlib.util.module_from_spec(spec)
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec.loader.exec_module(copy)
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved
    for attr, value in vars(copy).items():  # jit helpers imported from another module: use its interpreted copy
        if isinstance(value, JITFunction) and value.fn.__module__ != name:
            setattr(copy, attr, getattr(_interpreted_module(value.fn.__module__), value.fn.__name__))
    return copy


def as_kernel(kernel, device: torch.device):
    """The kernel to launch for tensors on `device`."""
    if torch.device(device).type == "cpu" and isinstance(kernel, JITFunction):
        return getattr(_interpreted_module(kernel.fn.__module__), kernel.fn.__name__)
    return kernel


@functools.cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of `device` (CPU_SMS for the interpreter)."""
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_SMS
    return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())
