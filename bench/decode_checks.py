"""GPU correctness checks of the decode kernels (issue 12), run by bench/decode_kernels.py before it times them.

Each check compares a kernel with its PyTorch reference on the device (relative norm error; fresh random inputs,
outputs poisoned with NaN first where the API takes `out`), and replays the kernel inside a CUDA graph to show it
is capturable and gives bit-identical results. `--smoke` (bench/decode_kernels.py) runs the same code on the CPU.
"""
import math

import torch

from kernels import fused
from kernels.attention import paged_decode_attention, paged_decode_attention_ref
from kernels.fused import naive as fused_ref
from kernels.moe import fused_moe, naive as moe_ref


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def graph_replay_equal(fn):
    """Run fn eagerly, capture it in a CUDA graph, replay: True when the replay reproduces the eager output."""
    if not torch.cuda.is_available():
        return None
    eager = fn().clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    out.fill_(float("nan")) if out.is_floating_point() else None
    graph.replay()
    torch.cuda.synchronize()
    return bool(torch.equal(out, eager))


def paged_inputs(lens, H, KVH, D, block_size, dtype, dev, spare=4):
    need = [math.ceil(n / block_size) for n in lens]
    total = sum(need) + spare
    perm = torch.randperm(total, device=dev).int()
    tables = torch.randint(0, 1 << 20, (len(lens), max(need + [1]) + 1), dtype=torch.int32, device=dev)
    at = 0
    for n, b in enumerate(need):
        tables[n, :b] = perm[at:at + b]
        at += b
    k = torch.randn(total * block_size, KVH, D, device=dev, dtype=dtype)
    v = torch.randn(total * block_size, KVH, D, device=dev, dtype=dtype)
    q = torch.randn(len(lens), H, D, device=dev, dtype=dtype)
    return q, k, v, tables, torch.tensor(lens, dtype=torch.int32, device=dev)


def check_attention(dev):
    res = {}
    cases = {"bf16 H64/8 bs256 ragged": ([1, 300, 0, 5000, 257], 64, 8, 128, 256, torch.bfloat16),
             "bf16 H64/8 bs16 ragged": ([4097, 17, 0, 1], 64, 8, 128, 16, torch.bfloat16),
             "fp32 H8/2 D64 bs32": ([700, 3, 64], 8, 2, 64, 32, torch.float32),
             "bf16 H8/1 D128 bs24": ([100, 999], 8, 1, 128, 24, torch.bfloat16)}
    for name, (lens, H, KVH, D, bs, dtype) in cases.items():
        q, k, v, tables, seq_lens = paged_inputs(lens, H, KVH, D, bs, dtype, dev)
        ref = paged_decode_attention_ref(q, k, v, tables, seq_lens, bs, D ** -0.5)
        for splits in (None, 1, 7):
            out = torch.full_like(q, float("nan"))
            paged_decode_attention(q, k, v, tables, seq_lens, bs, D ** -0.5, num_splits=splits, out=out)
            res[f"attention {name} splits={splits}"] = rel_err(out, ref)
        res[f"attention {name} graph replay equal"] = graph_replay_equal(
            lambda: paged_decode_attention(q, k, v, tables, seq_lens, bs, D ** -0.5))
    return res


def moe_inputs(T, H, I, E, k, int8, dev, dtype=torch.bfloat16):
    x = torch.randn(T, H, device=dev, dtype=dtype)
    weights, ids = torch.randn(T, E, device=dev).softmax(-1).topk(k, dim=-1)
    weights = (weights / weights.sum(-1, keepdim=True)).to(dtype)
    if int8:
        w13 = torch.randint(-127, 128, (E, 2 * I, H), dtype=torch.int8, device=dev)
        w2 = torch.randint(-127, 128, (E, H, I), dtype=torch.int8, device=dev)
        s13 = torch.rand(E, 2 * I, device=dev) / (127 * H ** 0.5)
        s2 = torch.rand(E, H, device=dev) / (127 * I ** 0.5)
        return x, w13, w2, weights, ids, s13, s2
    w13 = (torch.randn(E, 2 * I, H, device=dev) / H ** 0.5).to(dtype)
    w2 = (torch.randn(E, H, I, device=dev) / I ** 0.5).to(dtype)
    return x, w13, w2, weights, ids, None, None


def check_moe(dev, full=(6144, 9216, 32)):
    res = {}
    for T in (1, 8, 64):
        for int8 in (True, False):
            for H, I, E in ((1024, 512, 8), full):
                args = moe_inputs(T, H, I, E, 2, int8, dev)
                name = f"moe T={T} {'int8' if int8 else 'bf16'} H{H} I{I} E{E}"
                res[name] = rel_err(fused_moe(*args, impl="triton"), moe_ref.fused_moe(*args))
                if T in (1, 64) and H == 1024:
                    res[name + " graph replay equal"] = graph_replay_equal(lambda: fused_moe(*args, impl="triton"))
                del args
    return res


def check_fused(dev, hidden=6144, inner=8192, inter=9216, experts=32, vocab=200064):
    res, dt = {}, torch.bfloat16
    for T in (1, 64):
        h, y = torch.randn(T, hidden, device=dev, dtype=dt), torch.randn(T, hidden, device=dev, dtype=dt)
        w = (1 + 0.1 * torch.randn(hidden, device=dev)).to(dt)
        got, ref = fused.add_rms_norm(h, y, w, 1e-5), fused_ref.add_rms_norm(h, y, w, 1e-5)
        res[f"add_rms_norm T={T} (normed, x)"] = (rel_err(got[0], ref[0]), rel_err(got[1], ref[1]))
        gu = torch.randn(T, 2 * inter, device=dev, dtype=dt)
        res[f"silu_mul T={T}"] = rel_err(fused.silu_mul(gu), fused_ref.silu_mul(gu))
        logits = torch.randn(T, experts, device=dev) * 3
        (wt, ids), (rw, rids) = fused.router_topk(logits, 2, dt), fused_ref.router_topk(logits, 2, dt)
        res[f"router T={T} (weights err, ids equal)"] = (rel_err(wt, rw), bool(torch.equal(ids, rids)))
        o, g = torch.randn(T, inner, device=dev, dtype=dt), torch.randn(T, inner, device=dev, dtype=dt)
        wn = (1 + 0.1 * torch.randn(inner, device=dev)).to(dt)
        res[f"lightning_gate_norm T={T}"] = rel_err(fused.lightning_gate_norm(o, g, wn, 1e-6),
                                                    fused_ref.lightning_gate_norm(o, g, wn, 1e-6))
    head = torch.randn(vocab, hidden, device=dev, dtype=dt) * 0.02
    for T in (1, 64):
        hs = torch.randn(T, hidden, device=dev)
        res[f"lm_head T={T} vs fp32 copy"] = rel_err(fused.lm_head_logits(hs, head),
                                                     fused_ref.lm_head_logits(hs, head))
    res["lm_head graph replay equal"] = graph_replay_equal(lambda: fused.lm_head_logits(hs, head))
    return res
