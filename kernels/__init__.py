"""Compute kernels used by the engine: each fast path sits beside a slow PyTorch reference."""
