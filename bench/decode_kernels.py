"""Decode kernels of issue 12 on one GPU: paged decode attention, decode MoE GEMV, fused small ops, LM head.

`python bench/decode_kernels.py [OUT_DIR] [--sweep] [--smoke]`. Checks every kernel against its PyTorch reference
on the device first (bench/decode_checks.py, CUDA-graph replay included), measures the device-to-device copy
ceiling, then times (triton.testing.do_bench medians; "graph" = replays of a captured CUDA graph):
- paged decode attention, N in {1, 8, 64} x context in {256, 8k, 128k, 1M} (H=64, KVH=8, D=128, bf16, block 256;
  cases over KV_TOKENS tokens skipped), GB/s of K+V read vs the copy ceiling; the engine's current per-sequence
  gather + SDPA beside it at N=1;
- MoE at T in {1, 8, 64}, M1's expert shape (hidden 6144, intermediate 9216, 32 experts, top-2), int8 and bf16
  weights: the new kernels (gemv.py) and the previous path, as % of the copy ceiling on the experts' bytes;
- the fused ops and the LM head (bf16 weights, fp32 activations) against the torch sequences they replace.
`--sweep` also times launch configurations (attention tiles/splits, GEMV tiles/split-K). Writes JSON to OUT_DIR
(default $OUT, else bench/results) with the card name and versions, prints a table last. `--smoke`: tiny shapes on
the CPU (interpreter), to exercise the script's logic.
"""
import json
import os
import sys
import time

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import decode_checks as checks  # noqa: E402
from kernels import fused  # noqa: E402
from kernels.attention import decode as attn_decode, paged_decode_attention  # noqa: E402
from kernels.fused import naive as fused_ref  # noqa: E402
from kernels.moe import fused_moe, gemv  # noqa: E402

SMOKE = "--smoke" in sys.argv
SWEEP = "--sweep" in sys.argv
DEV = "cpu" if SMOKE else "cuda"
H, KVH, D, BLOCK = (8, 2, 16, 16) if SMOKE else (64, 8, 128, 256)
KV_TOKENS = 4096 if SMOKE else 1 << 23  # 8M tokens: 2 x 16 GiB of bf16 K and V
CONTEXTS = [256, 1024] if SMOKE else [256, 8192, 131072, 1 << 20]
BATCHES = [1, 2] if SMOKE else [1, 8, 64]
MOE = (64, 32, 4) if SMOKE else (6144, 9216, 32)  # hidden, intermediate, experts
TOKENS = [1, 8] if SMOKE else [1, 8, 64]


def ms(fn):
    if SMOKE:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def graph_ms(fn, reps=1):
    """Median ms per call of fn, `reps` calls captured in one CUDA graph: no launch overhead, and with reps > 1
    the graph's own start (~5 µs) spread out, as inside a captured decode step."""
    if SMOKE:
        return ms(fn)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return ms(graph.replay) / reps


def graph_reps(reps):
    return lambda fn: graph_ms(fn, reps)


def timed(row, name, fn, timer=ms):
    try:
        row[name] = timer(fn)
    except Exception as e:  # noqa: BLE001  one failing configuration must not end the run
        row[name + " error"] = repr(e)[:300]
        print(name, "failed:", repr(e)[:300], flush=True)


def copy_ceiling():
    src = torch.empty(1 << (20 if SMOKE else 31), dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    return 2 * src.numel() / (ms(lambda: dst.copy_(src)) * 1e-3)


def engine_sdpa(q, k_cache, v_cache, rows):
    """The engine's decode path today (engine/layers/attention.py): gather rows, expand kv heads, SDPA."""
    k = k_cache[rows].transpose(0, 1).repeat_interleave(H // KVH, 0)[None]
    v = v_cache[rows].transpose(0, 1).repeat_interleave(H // KVH, 0)[None]
    return torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1)[None], k, v, scale=D ** -0.5)


def bench_attention(copy_bw):
    k_cache = torch.randn(KV_TOKENS, KVH, D, device=DEV, dtype=torch.bfloat16)
    v_cache = torch.randn(KV_TOKENS, KVH, D, device=DEV, dtype=torch.bfloat16)
    blocks = torch.randperm(KV_TOKENS // BLOCK, device=DEV).int()
    rows, sweep = [], []
    for N in BATCHES:
        for ctx in CONTEXTS:
            if N * ctx > KV_TOKENS:
                rows.append(dict(N=N, ctx=ctx, skipped=f"needs {N * ctx} KV tokens > {KV_TOKENS}"))
                continue
            per = ctx // BLOCK
            tables = blocks[:N * per].view(N, per).contiguous()
            lens = torch.full((N,), ctx, dtype=torch.int32, device=DEV)
            q = torch.randn(N, H, D, device=DEV, dtype=torch.bfloat16)
            out = torch.empty_like(q)
            splits = attn_decode.choose_num_splits(N, KVH, ctx, q.device)
            row = dict(N=N, ctx=ctx, splits=splits, kv_bytes=N * ctx * KVH * D * 2 * 2)
            run = lambda: paged_decode_attention(q, k_cache, v_cache, tables, lens, BLOCK, D ** -0.5, out=out)
            timed(row, "ms", run)
            timed(row, "graph ms", run, graph_reps(20 if N * ctx <= 65536 else 3))
            if N == 1 and ctx <= 131072:
                krow = (tables[0].long()[:, None] * BLOCK + torch.arange(BLOCK, device=DEV)).flatten()
                timed(row, "engine sdpa ms", lambda: engine_sdpa(q[:1], k_cache, v_cache, krow))
            best = min(row.get("ms", 1e9), row.get("graph ms", 1e9))
            row["TB/s"] = row["kv_bytes"] / (best * 1e-3) / 1e12
            row["% copy"] = 100 * row["kv_bytes"] / (best * 1e-3) / copy_bw
            rows.append(row)
            print("attention", row, flush=True)
            if SWEEP and (N, ctx) in ((1, 256), (8, 256), (1, 8192), (1, 131072)):
                sweep += sweep_attention(q, k_cache, v_cache, tables, lens, out, N, ctx, splits)
    return rows, sweep


def sweep_attention(q, k_cache, v_cache, tables, lens, out, N, ctx, splits):
    res = []
    tiles = [(64, 4, 2), (32, 4, 2), (64, 4, 3), (16, 4, 2)]
    for block_n, warps, stages in tiles:
        for s in sorted({splits, 1, 2, 4, 8} if ctx <= 8192 else {splits, 2 * splits}):
            row = dict(N=N, ctx=ctx, block_n=block_n, warps=warps, stages=stages, splits=s)
            timed(row, "graph ms", lambda: attn_decode.triton_paged_decode_attention(
                q, k_cache, v_cache, tables, lens, BLOCK, D ** -0.5, s, out, block_n, warps, stages),
                graph_reps(20 if ctx <= 8192 else 3))
            res.append(row)
            print("attention sweep", row, flush=True)
    return res


def expert_weights(int8):
    hidden, inter, E = MOE
    if int8:
        return (torch.randint(-127, 128, (E, 2 * inter, hidden), dtype=torch.int8, device=DEV),
                torch.randint(-127, 128, (E, hidden, inter), dtype=torch.int8, device=DEV),
                torch.rand(E, 2 * inter, device=DEV) / (127 * hidden ** 0.5),
                torch.rand(E, hidden, device=DEV) / (127 * inter ** 0.5))
    return ((torch.randn(E, 2 * inter, hidden, device=DEV) / hidden ** 0.5).to(torch.bfloat16),
            (torch.randn(E, hidden, inter, device=DEV) / inter ** 0.5).to(torch.bfloat16), None, None)


def bench_moe(copy_bw):
    hidden, inter, E = MOE
    rows, sweep = [], []
    for int8 in (True, False):
        w13, w2, s13, s2 = expert_weights(int8)
        for T in TOKENS:
            x = torch.randn(T, hidden, device=DEV, dtype=torch.bfloat16)
            weights, ids = torch.randn(T, E, device=DEV).softmax(-1).topk(2, dim=-1)
            weights = (weights / weights.sum(-1, keepdim=True)).to(torch.bfloat16)
            used = ids.unique().numel()
            nbytes = used * 3 * hidden * inter * w13.element_size()
            row = dict(weights="int8" if int8 else "bf16", T=T, experts_read=used, bytes=nbytes)
            run = lambda: fused_moe(x, w13, w2, weights, ids, s13, s2, impl="triton")
            timed(row, "ms", run)
            timed(row, "graph ms", run, graph_reps(10))
            saved, gemv.MAX_TOKENS = gemv.MAX_TOKENS, 0
            timed(row, "previous ms", run)
            gemv.MAX_TOKENS = saved
            best = min(row.get("ms", 1e9), row.get("graph ms", 1e9))
            row["% copy"] = 100 * nbytes / (best * 1e-3) / copy_bw
            row["previous % copy"] = 100 * nbytes / (row.get("previous ms", 1e9) * 1e-3) / copy_bw
            rows.append(row)
            print("moe", row, flush=True)
            if SWEEP and int8 and T == 1:
                sweep += sweep_moe(x, w13, w2, weights, ids, s13, s2, T, nbytes, copy_bw)
        del w13, w2
    return rows, sweep


def sweep_moe(x, w13, w2, weights, ids, s13, s2, T, nbytes, copy_bw):
    res = []
    configs = [(64, 128, 4, 4), (64, 128, 4, 3), (64, 256, 8, 3), (32, 128, 4, 4), (32, 256, 4, 3), (128, 128, 8, 4)]
    for bn, bk, warps, stages in configs:
        cfg = dict(BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
        for split in (None, (1, 1), (4, 4), (8, 8), (4, 8), (2, 4), (16, 16)):
            row = dict(T=T, **cfg, split=split)
            timed(row, "graph ms", lambda: gemv.moe_gemv(x, w13, w2, weights, ids, s13, s2, split, cfg),
                  graph_reps(10))
            if "graph ms" in row:
                row["% copy"] = 100 * nbytes / (row["graph ms"] * 1e-3) / copy_bw
            res.append(row)
            print("moe sweep", row, flush=True)
    return res


def bench_small_ops(copy_bw):
    hidden, inner, inter, E, vocab = (64, 64, 32, 4, 500) if SMOKE else (6144, 8192, 9216, 32, 200064)
    dt, rows = torch.bfloat16, []
    head = torch.randn(vocab, hidden, device=DEV, dtype=dt) * 0.02
    head32 = head.float()
    for T in TOKENS:
        h, y = torch.randn(T, hidden, device=DEV, dtype=dt), torch.randn(T, hidden, device=DEV, dtype=dt)
        w = torch.randn(hidden, device=DEV, dtype=dt)
        gu = torch.randn(T, 2 * inter, device=DEV, dtype=dt)
        logits = torch.randn(T, E, device=DEV)
        o, g = torch.randn(T, inner, device=DEV, dtype=dt), torch.randn(T, inner, device=DEV, dtype=dt)
        wn = torch.randn(inner, device=DEV, dtype=dt)
        hs = torch.randn(T, hidden, device=DEV)
        ops = {"add_rms_norm": (lambda: fused.add_rms_norm(h, y, w, 1e-5)[0],
                                lambda: fused_ref.add_rms_norm(h, y, w, 1e-5)[0]),
               "silu_mul": (lambda: fused.silu_mul(gu), lambda: fused_ref.silu_mul(gu)),
               "router_topk": (lambda: fused.router_topk(logits, 2, dt)[0],
                               lambda: fused_ref.router_topk(logits, 2, dt)[0]),
               "lightning_gate_norm": (lambda: fused.lightning_gate_norm(o, g, wn, 1e-6),
                                       lambda: fused_ref.lightning_gate_norm(o, g, wn, 1e-6)),
               "lm_head": (lambda: fused.lm_head_logits(hs, head), lambda: hs @ head32.t())}
        for name, (ours, ref) in ops.items():
            row = dict(op=name, T=T)
            timed(row, "graph ms", ours, graph_reps(20))
            timed(row, "torch graph ms", ref, graph_reps(20))
            if name == "lm_head" and "graph ms" in row:
                row["% copy (bf16 bytes)"] = 100 * head.numel() * 2 / (row["graph ms"] * 1e-3) / copy_bw
            rows.append(row)
            print("op", row, flush=True)
    return rows


def table(res):
    lines = [f"card {res['meta']['card']}, copy ceiling {res['copy_TBps']:.2f} TB/s", "",
             "| attention N | ctx | splits | µs (graph) | µs (eager) | TB/s | % copy | engine SDPA µs |",
             "|---" * 8 + "|"]
    for r in res["attention"]:
        if "skipped" not in r:
            lines.append(f"| {r['N']} | {r['ctx']} | {r['splits']} | {1e3 * r.get('graph ms', -1):.1f} | "
                         f"{1e3 * r.get('ms', -1):.1f} | {r['TB/s']:.2f} | {r['% copy']:.0f} | "
                         f"{1e3 * r['engine sdpa ms']:.0f} |" if "engine sdpa ms" in r else
                         f"| {r['N']} | {r['ctx']} | {r['splits']} | {1e3 * r.get('graph ms', -1):.1f} | "
                         f"{1e3 * r.get('ms', -1):.1f} | {r['TB/s']:.2f} | {r['% copy']:.0f} | — |")
    lines += ["", "| MoE weights | T | experts read | µs (graph) | µs (eager) | % copy | previous µs | previous % |",
              "|---" * 8 + "|"]
    for r in res["moe"]:
        lines.append(f"| {r['weights']} | {r['T']} | {r['experts_read']} | {1e3 * r.get('graph ms', -1):.1f} | "
                     f"{1e3 * r.get('ms', -1):.1f} | {r['% copy']:.0f} | {1e3 * r.get('previous ms', -1):.1f} | "
                     f"{r['previous % copy']:.0f} |")
    lines += ["", "| op | T | µs (graph) | torch µs (graph) |", "|---" * 4 + "|"]
    for r in res["ops"]:
        extra = f" ({r['% copy (bf16 bytes)']:.0f}% copy)" if "% copy (bf16 bytes)" in r else ""
        lines.append(f"| {r['op']} | {r['T']} | {1e3 * r.get('graph ms', -1):.1f}{extra} | "
                     f"{1e3 * r.get('torch graph ms', -1):.1f} |")
    return "\n".join(lines)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out_dir = args[0] if args else os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    card = "cpu" if SMOKE else torch.cuda.get_device_name()
    res = dict(meta=dict(card=card, torch=torch.__version__, triton=triton.__version__, sweep=SWEEP))
    t0 = time.time()
    res["checks"] = {}
    for check in (checks.check_attention, checks.check_moe, checks.check_fused):
        try:
            res["checks"].update(check(DEV) if not SMOKE else {})
        except Exception as e:  # noqa: BLE001
            res["checks"][check.__name__ + " error"] = repr(e)[:500]
        print(check.__name__, f"done at {time.time() - t0:.0f} s", flush=True)
    for k, v in res["checks"].items():
        print("check", k, v, flush=True)
    res["copy_TBps"] = copy_ceiling() / 1e12
    copy_bw = res["copy_TBps"] * 1e12
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"decode_kernels_{'cpu' if SMOKE else card.split()[-1].lower()}"
                                 f"{'_sweep' if SWEEP else ''}.json")
    for key, part in (("attention", bench_attention), ("moe", bench_moe), ("ops", bench_small_ops)):
        got = part(copy_bw)
        res[key], res[key + "_sweep"] = got if isinstance(got, tuple) else (got, [])
        with open(path, "w") as f:  # after every part: a run cut short keeps what it measured
            json.dump(res, f, indent=1)
        print(f"{key} done at {time.time() - t0:.0f} s", flush=True)
    print(table(res))


if __name__ == "__main__":
    main()
