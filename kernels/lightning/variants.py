"""Triton prefill variants by name: a spec string picks the kernel family and its launch settings.

Spec: "<family>[/<operands>][/bt<N>][/bv<N>][/w<N>][/s<N>]", family "chunk" (chunk.py: delta, scan and output
launches) or "fused" (fused.py: one launch, the state kept in registers over the whole sequence); operands a key of
chunk.OPERANDS; bt/bv the token and value-column block, w the warps, s the pipeline stages, g (fused only) the
tokens per launch. Unnamed settings keep the
family's defaults, so "chunk" is chunk_prefill as it was. bench/lightning_prefill.py times these and prints the spec
of the fastest one within the error bar.
"""
import re

from .chunk import OPERANDS, chunk_prefill
from .fused import fused_prefill

FAMILIES = {"chunk": chunk_prefill, "fused": fused_prefill}
KEYS = {"bt": "block_t", "bv": "block_v", "w": "num_warps", "s": "num_stages", "g": "segment"}


def parse(spec: str):
    """(prefill function, keyword arguments) for a spec string; ValueError naming the bad part otherwise."""
    family, *parts = spec.split("/")
    if family not in FAMILIES:
        raise ValueError(f"prefill variant {spec!r}: family must be one of {sorted(FAMILIES)}, got {family!r}")
    kwargs = {}
    for part in parts:
        hit = re.fullmatch(r"(bt|bv|w|s|g)(\d+)", part)
        if part in OPERANDS:
            kwargs["operands"] = part
        elif hit:
            kwargs[KEYS[hit.group(1)]] = int(hit.group(2))
        else:
            raise ValueError(f"prefill variant {spec!r}: unknown part {part!r} (operands one of {sorted(OPERANDS)}, "
                             f"or bt/bv/w/s/g followed by a number)")
    if family == "chunk" and "segment" in kwargs:
        raise ValueError(f"prefill variant {spec!r}: segments (g) are for the fused family only")
    return FAMILIES[family], kwargs


def run_prefill(spec, q, k, v, slopes, initial_state=None, cu_seqlens=None, **extra):
    """The variant `spec` on these inputs: (o [T, H, D], final_state [N, H, D, D] fp32)."""
    fn, kwargs = parse(spec)
    return fn(q, k, v, slopes, initial_state, cu_seqlens, **kwargs, **extra)
