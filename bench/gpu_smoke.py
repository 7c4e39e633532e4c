"""CUDA path of the engine vs its CPU path and the fp64 reference, on the tiny hybrid checkpoint (run on a GPU)."""
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine import LLM, SamplingParams  # noqa: E402
from engine.model.tiny import write_checkpoint  # noqa: E402
from tests.m1_reference import reference_logits  # noqa: E402


def rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm()).item()


path = write_checkpoint(tempfile.mkdtemp(), layout="official", seed=0)
ids = torch.randint(0, 2000, (700,), generator=torch.Generator().manual_seed(0)).tolist()
ref = reference_logits(path, ids)
for dtype in ("bfloat16", "float32"):
    gpu = LLM(str(path), device="cuda", dtype=dtype)
    print(f"cuda {dtype}: rel err vs fp64 reference = {rel(gpu.logits(ids), ref):.2e}")
    out = gpu.generate(prompt_token_ids=[ids[:300]] * 3, sampling_params=SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    print(f"cuda {dtype}: batch of 3 identical prompts agree: {len({tuple(o.outputs[0].token_ids) for o in out}) == 1}")
cpu = LLM(str(path), device="cpu", dtype="float32")
a = cpu.generate(prompt_token_ids=ids[:300], sampling_params=SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
g = LLM(str(path), device="cuda", dtype="float32").generate(prompt_token_ids=ids[:300], sampling_params=SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
print("greedy cpu == cuda fp32:", a[0].outputs[0].token_ids == g[0].outputs[0].token_ids)
chunked = LLM(str(path), device="cuda", dtype="float32", prefill_chunk_size=128, max_num_batched_tokens=128)
c = chunked.generate(prompt_token_ids=ids[:600], sampling_params=SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
w = LLM(str(path), device="cuda", dtype="float32").generate(prompt_token_ids=ids[:600], sampling_params=SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
print("greedy chunked (128-token chunks over a KV history) == one chunk:", c[0].outputs[0].token_ids == w[0].outputs[0].token_ids)
q8 = LLM(str(path), device="cuda", dtype="bfloat16", quantization="experts_int8")
print(f"cuda bf16 experts_int8: rel err vs fp64 reference = {rel(q8.logits(ids), ref):.2e}")
from engine.model.layers.attention import SoftmaxAttention  # noqa: E402
from engine.model.config import ModelConfig  # noqa: E402
import json  # noqa: E402
cfg = ModelConfig.from_dict({**json.load(open(path / "config.json")), "num_attention_heads": 64, "num_key_value_heads": 8,
                             "head_dim": 128, "rotary_dim": 64})
attn = SoftmaxAttention(cfg, 3, torch.bfloat16, "cuda")
q = torch.randn(8192, 64, 128, device="cuda", dtype=torch.bfloat16)
kv = torch.randn(32768, 8, 128, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize(); base = torch.cuda.max_memory_allocated()
o = attn._attend(q, kv, kv)
torch.cuda.synchronize()
extra = (torch.cuda.max_memory_allocated() - base) / 2**30
qd, kd = q.double().cpu()[-64:], kv.double().cpu().repeat_interleave(8, 1)
s = torch.einsum("qhd,khd->hqk", qd, kd) / 128 ** 0.5
s = s.masked_fill(torch.arange(32768)[None, None] > torch.arange(32768 - 64, 32768)[None, :, None], float("-inf"))
ref_o = torch.einsum("hqk,khd->qhd", s.softmax(-1), kd)
print(f"attention 8192 queries x 32768 keys: extra peak {extra:.2f} GiB (math path would need 64 GiB), "
      f"rel err of the last 64 rows vs fp64 {rel(o[-64:], ref_o):.1e}")
