"""Compile many Triton kernel configurations at once before a benchmark times them one by one.

A bench that sweeps variants on a fresh GPU machine spends most of its time compiling. `precompile` runs each
configuration's host function once with the kernels' modules handing out warmup-only launchers, inside Triton's
AsyncCompileMode (Triton >= 3.4), so the compiles run on a thread pool; the serial pass that follows finds them built.
"""
import os
import time


class _Warmup:
    """Stands in for a kernel during precompile(): `[grid](...)` submits a compile (warmup) instead of launching."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.kernel.warmup(*args, grid=grid, **kwargs)


def precompile(fns, modules, dev):
    """Compile every configuration's kernels at once on a thread pool (Triton's AsyncCompileMode; the kernels'
    modules get a warmup-only as_kernel meanwhile) so the serial checks and timings find them built. Returns seconds
    spent or why it was skipped; a compile failing here fails again, and is recorded, in the serial run."""
    if dev != "cuda":
        return "skipped on CPU (interpreter)"
    try:
        from concurrent.futures import ThreadPoolExecutor
        from triton.runtime._async_compile import AsyncCompileMode
    except ImportError as e:
        return f"skipped: {e}"
    t, saved = time.time(), [m.as_kernel for m in modules]
    try:
        for m in modules:
            m.as_kernel = lambda kernel, device: _Warmup(kernel)
        with ThreadPoolExecutor(min(16, os.cpu_count() or 4)) as pool:
            try:
                mode = AsyncCompileMode(pool, ignore_errors=True)
            except TypeError:  # older signature
                mode = AsyncCompileMode(pool)
            with mode:
                for fn in fns:
                    try:
                        fn()
                    except Exception:  # noqa: BLE001 - reported by the serial run
                        pass
    except Exception as e:  # noqa: BLE001
        return f"failed after {time.time() - t:.1f} s: {type(e).__name__}: {e}"[:300]
    finally:
        for m, a in zip(modules, saved):
            m.as_kernel = a
    return time.time() - t
