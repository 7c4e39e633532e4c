"""Compile Triton kernels in parallel processes before a bench times them (Triton's disk cache is shared).

A bench script run with `--warm i/n SPEC...` compiles and runs its share of the specs once on tiny inputs with the
same specialisation, printing "OK <spec>" or "FAIL <spec> <error>" per spec; the timing process then loads the
compiled kernels from the cache and skips the specs that failed there, so a kernel that crashes (an illegal address
is sticky for the whole CUDA context) costs one compile process, not the run.
"""
import os
import subprocess
import sys
import time

import torch


def kernel_of(spec):
    """The spec without its segment length (g), which changes no compiled kernel."""
    return "/".join(p for p in spec.split("/") if not p.startswith("g"))


def warm(script, workers, specs, flags=()):
    """Start `workers` processes of `script --warm i/workers [flags] KERNEL...`, each compiling and running its share
    of the kernels once (tiny inputs, same specialisation) and printing "OK <spec>" or "FAIL <spec> <error>" each."""
    specs = list(dict.fromkeys(kernel_of(s) for s in specs))
    return [subprocess.Popen([sys.executable, os.path.abspath(script), "--warm", f"{i}/{workers}", *flags, *specs],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(workers)]


def warm_results(procs, t0, limit=60.0):
    """({kernel spec: "OK" or its error}, waiting at most until t0 + limit): the timing process skips the failed ones,
    since a crash there (an illegal address) must not take its CUDA context with it."""
    seen = {}
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, limit - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        for line in out.splitlines():
            status, _, rest = line.partition(" ")
            spec, _, err = rest.partition(" ")
            if status in ("OK", "FAIL"):
                seen[spec] = "OK" if status == "OK" else err
    return seen


def cuda_alive(dev):
    """False once the context is lost (an illegal address is sticky: every later launch would fail too)."""
    if dev != "cuda":
        return True
    try:
        torch.cuda.synchronize()
        return True
    except Exception:  # noqa: BLE001
        return False
