"""A second tile sweep for bench/prefill_kernels.py (same measurements, more configurations), printing a table."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prefill_kernels as pk  # noqa: E402
import torch  # noqa: E402

pk.ATT_SWEEP = [(128, 128, 8, 4), (128, 256, 8, 2), (256, 128, 16, 2), (128, 128, 4, 3), (128, 128, 8, 3)]
pk.MOE_SWEEP = {"int8": [(128, 256, 64, 8, 3, False, 8), (128, 256, 64, 8, 4, False, 8),
                         (256, 128, 64, 8, 3, True, 8), (128, 128, 64, 8, 5, False, 8)],
                "bf16": [(128, 256, 64, 8, 4, False, 8), (256, 128, 64, 8, 3, False, 8),
                         (128, 256, 64, 8, 3, False, 4)]}
g = torch.Generator(device="cuda").manual_seed(0)
peak = pk.ceilings()["bf16_matmul_TFLOPs"]
r = {"peak": peak, "attention": pk.attention_bench(g, (131072,), peak), "moe": pk.moe_bench(g, peak, sizes=(8192,))}
print(json.dumps(r, indent=0))
