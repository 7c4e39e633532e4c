"""Lightning-attention kernels on one GPU: ours vs fla (chunk_simple_gla / fused_recurrent_simple_gla) vs PyTorch.

Run on a CUDA machine with fla importable: `python bench/kernels.py [--quick]`. Checks each implementation against an
fp64 reference first, then times prefill (H in {8, 64}, D=128, T in {4k, 32k, 128k}; ours in several launch
configurations) and decode (B in {1, 8, 64, 256}), measures the device copy ceiling, writes JSON to $OUT (or
bench/results) and prints a table last. Inputs are SiLU(randn) in bf16; slopes of M1's layer 0.
"""
import json
import os
import sys

import torch
import triton
from triton.testing import do_bench

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels.lightning import layer_slopes, naive  # noqa: E402
from kernels.lightning.chunk import chunk_prefill  # noqa: E402
from kernels.lightning.recurrent import recurrent_decode  # noqa: E402

D = 128
DEV = "cuda"
QUICK = "--quick" in sys.argv
PREFILL_SHAPES = [(8, 4096), (8, 32768), (8, 131072), (64, 4096), (64, 32768), (64, 131072)]
PREFILL_SHAPES = [(8, 32768), (64, 32768)] if "--extra" in sys.argv else PREFILL_SHAPES
DECODE_SHAPES = [(b, h) for h in (8, 64) for b in (1, 8, 64, 256)]
EXTRA = "--extra" in sys.argv  # untried configs and head dims, in a process of their own: a crash spares the main run
DEFAULT = "bv32-w4 fp16"  # chunk_prefill's defaults for bf16, D=128
TILINGS = {DEFAULT: {}, "bv32-w4 split": dict(operands="split"), "bv32-w4 bf16": dict(operands="bf16"),
           "bv32-w4 split-fp16": dict(operands="split-fp16"), "bv32-w4 split-state": dict(operands="split-state"),
           "bv32-w4-s3 fp16": dict(num_stages=3), "bv64-w8 bf16": dict(block_v=64, num_warps=8, operands="bf16")}
if EXTRA:  # (num_stages=1 hit an illegal address on the H100 in run 2: left out)
    TILINGS = {DEFAULT: {}, "bv16-w4 bf16": dict(block_v=16, operands="bf16"),
               "bv64-w4 bf16": dict(block_v=64, operands="bf16"), "bv32-w8 fp16": dict(num_warps=8),
               "bt128-bv32-w8 bf16": dict(block_t=128, num_warps=8, operands="bf16")}
CHUNK_TILINGS = [] if EXTRA else [DEFAULT, "bv32-w4 bf16"]
DECODE_TILES = [(128, 4), (128, 8), (64, 4), (64, 8), (32, 4)]  # (block_v, num_warps)
SMALL_D = [16, 32, 64]
CHUNKS = [1024, 2048, 4096]
try:
    from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
except ImportError as e:
    chunk_simple_gla = fused_recurrent_simple_gla = None
    print("fla not importable:", e)


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def silu_inputs(*shape, dtype=torch.bfloat16):
    return [torch.nn.functional.silu(torch.randn(*shape, device=DEV)).to(dtype) for _ in range(3)]


def ms(fn, rep=200):
    """Median ms of fn over do_bench; rep=None calls fn once (it times itself)."""
    if rep is None:
        return fn()
    return do_bench(fn, warmup=25, rep=50 if QUICK else rep, return_mode="median")


def timed(row, name, fn, **kw):
    """row[name] = median ms of fn, or row[name + ' error'] when it fails (one config must not end the run)."""
    try:
        row[name] = ms(fn, **kw)
    except Exception as e:  # noqa: BLE001
        row[name + " error"] = repr(e)[:300]
        print(name, "failed:", repr(e)[:300])


def copy_ceiling():
    """Device-to-device copy, bytes read + written per second."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=DEV).random_()
    dst = torch.empty_like(src)
    return 2 * src.numel() / (ms(lambda: dst.copy_(src)) * 1e-3)


def fla_prefill(q, k, v, slopes, init=None, cu=None):
    o, s = chunk_simple_gla(q[None], k[None], v[None], g_gamma=-slopes, scale=1.0, initial_state=init,
                            output_final_state=True, cu_seqlens=None if cu is None else cu.long())
    return o[0], s


def checked(res, name, fn):
    """res[name] = fn() (a tuple of relative errors), or the error text when it fails."""
    try:
        res[name] = fn()
    except Exception as e:  # noqa: BLE001
        res[name] = (repr(e)[:300],)
        print(name, "failed:", repr(e)[:300])


def correctness():
    """Relative errors vs fp64 (block form in fp64 on the GPU; decode in fp64 torch) at modest sizes."""
    res = {}
    H, T = 8, (512 if DEV == "cpu" else 4096)
    slopes = {l: layer_slopes(64, l, 80)[::8].to(DEV) for l in (0, 78)}
    for dtype in (torch.bfloat16, torch.float32):
        q, k, v = silu_inputs(T, H, D, dtype=dtype)
        init = torch.randn(1, H, D, D, device=DEV)
        for l, s in slopes.items():
            ref_o, ref_s = naive.block_form(q, k, v, s, init[0], dtype=torch.float64)
            errs = lambda o, st: (rel_err(o, ref_o), rel_err(st[0], ref_s))  # noqa: E731
            tag = f"{str(dtype)[6:]} layer{l}"
            checked(res, f"ours prefill {tag}", lambda: errs(*chunk_prefill(q, k, v, s, init)))
            if dtype == torch.float32:
                checked(res, f"ours prefill {tag} ieee",
                        lambda: errs(*chunk_prefill(q, k, v, s, init, f32_precision="ieee")))
            if chunk_simple_gla is not None:
                checked(res, f"fla prefill {tag}", lambda: errs(*fla_prefill(q, k, v, s, init)))
            for name, tune in list(TILINGS.items())[1:] if dtype == torch.bfloat16 else []:
                checked(res, f"ours prefill {tag} {name}", lambda: errs(*chunk_prefill(q, k, v, s, init, **tune)))
    lens = [100, 300, 17, 409, 1] if DEV == "cpu" else [1000, 3000, 17, 4096, 1]
    cu = torch.tensor([0] + lens, device=DEV).cumsum(0).to(torch.int32)
    q, k, v = silu_inputs(int(cu[-1]), H, D)
    init = torch.randn(len(lens), H, D, D, device=DEV)
    ref = [naive.block_form(q[a:b], k[a:b], v[a:b], slopes[0], init[n], dtype=torch.float64)
           for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist()))]
    ref_o, ref_s = torch.cat([r[0] for r in ref]), torch.stack([r[1] for r in ref])
    pair = lambda o, st: (rel_err(o, ref_o), rel_err(st, ref_s))  # noqa: E731
    checked(res, "ours prefill varlen bf16 layer0", lambda: pair(*chunk_prefill(q, k, v, slopes[0], init, cu)))
    B, S = 64, 80
    q, k, v = silu_inputs(B, H, D)
    pool = torch.randn(S, H, D, D, device=DEV)
    slots = torch.randperm(S, device=DEV)[:B]
    slots[::7] = -1
    live = slots >= 0
    st = slopes[0].double()
    kv = k[live].double()[..., None] * v[live].double()[..., None, :]
    ref_s = torch.exp(-st)[:, None, None] * pool[slots[live]].double() + kv
    ref_o = torch.einsum("bhd,bhde->bhe", q[live].double(), ref_s)
    def decode_errs():
        o = recurrent_decode(q, k, v, slopes[0], pool, slots)
        return rel_err(o[live], ref_o), rel_err(pool[slots[live]], ref_s), float((o[~live] == 0).all())
    checked(res, "ours decode bf16 (o, state, padded rows zero)", decode_errs)
    return res


def bench_prefill(copy_bw):
    rows = []
    for H, T in PREFILL_SHAPES[:2] if QUICK else PREFILL_SHAPES:
        q, k, v = silu_inputs(T, H, D)
        s = layer_slopes(64, 0, 80)[:: 64 // H].to(DEV)
        floor_ms = 4 * T * H * D * 2 / copy_bw * 1e3
        row = dict(H=H, T=T, floor_ms=floor_ms)
        for name, tune in TILINGS.items():
            timed(row, f"ours {name}", lambda: chunk_prefill(q, k, v, s, **tune))
        for name in CHUNK_TILINGS:
            for c in CHUNKS:
                timed(row, f"ours {name} chunk{c}", lambda: chunk_prefill(q, k, v, s, chunk=c, **TILINGS[name]))
        if T == 32768:
            row["kernel_us"] = {name: kernel_times(lambda: chunk_prefill(q, k, v, s, **TILINGS[name]))
                                for name in ([] if EXTRA else [DEFAULT, "bv32-w4 split", "bv32-w4 bf16"])}
        if chunk_simple_gla is not None:
            timed(row, "fla", lambda: fla_prefill(q, k, v, s))
        if T == 4096 and H == 8:
            timed(row, "torch block loop", lambda: naive.block_form(q, k, v, s), rep=100)
        if T == 32768:
            qs, ks, vs = torch.cat([q, k, v], dim=-1).split(D, dim=-1)  # per-head interleaved, like qkv_proj
            timed(row, "ours strided-qkv", lambda: chunk_prefill(qs, ks, vs, s))
            del qs, ks, vs
        rows.append(row)
        del q, k, v
        torch.cuda.empty_cache()
    return rows


def kernel_times(fn, reps=5):
    """Mean µs per call of each CUDA kernel fn launches (torch profiler), to split a prefill into its phases."""
    try:
        fn()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        return {e.key[:40]: e.device_time_total / reps for e in prof.key_averages() if e.device_time_total > 0}
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)[:300]}


def small_d_errors(res):
    """Every head dim on the GPU: bf16 and fp32, varlen with initial states, and decode, vs fp64."""
    for d in SMALL_D:
        lens = [300, 1, 700]
        cu = torch.tensor([0] + lens, device=DEV).cumsum(0).to(torch.int32)
        s = layer_slopes(64, 0, 80)[::16].to(DEV)
        for dtype in (torch.bfloat16, torch.float32):
            q, k, v = silu_inputs(int(cu[-1]), 4, d, dtype=dtype)
            init = torch.randn(len(lens), 4, d, d, device=DEV)
            ref = [naive.block_form(q[a:b], k[a:b], v[a:b], s, init[n], dtype=torch.float64)
                   for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist()))]
            ref_o, ref_s = torch.cat([r[0] for r in ref]), torch.stack([r[1] for r in ref])
            pair = lambda o, st: (rel_err(o, ref_o), rel_err(st, ref_s))  # noqa: E731
            checked(res, f"ours prefill varlen D={d} {str(dtype)[6:]}",
                    lambda: pair(*chunk_prefill(q, k, v, s, init, cu)))
        pool = torch.randn(5, 4, d, d, device=DEV)
        q, k, v = silu_inputs(3, 4, d)
        slots = torch.tensor([4, -1, 1], device=DEV)
        live = slots[slots >= 0]
        ref_s = torch.exp(-s.double())[:, None, None] * pool[live].double() + \
            k[[0, 2]].double()[..., None] * v[[0, 2]].double()[..., None, :]
        ref_o = torch.einsum("bhd,bhde->bhe", q[[0, 2]].double(), ref_s)
        checked(res, f"ours decode D={d}", lambda: (rel_err(recurrent_decode(q, k, v, s, pool, slots)[[0, 2]], ref_o),))


def graph_ms(fns):
    """Median per-call time of a CUDA graph that runs each fn once (fns touch different buffers: no L2 reuse)."""
    for fn in fns[:2]:
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in fns:
            fn()
    return ms(graph.replay) / len(fns)


def bench_decode(copy_bw):
    rows = []
    for B, H in DECODE_SHAPES:
        state_bytes = 2 * B * H * D * D * 4
        copies = max(1, min(256, (256 << 20) // (state_bytes // 2)))
        s = layer_slopes(64, 0, 80)[:: 64 // H].to(DEV)
        q, k, v = silu_inputs(B, H, D)
        pools = [torch.randn(B, H, D, D, device=DEV) for _ in range(copies)]
        slots = torch.arange(B, device=DEV)
        row = dict(B=B, H=H, state_MB=state_bytes / 1e6, floor_us=state_bytes / copy_bw * 1e6)
        ours = [lambda p=p: recurrent_decode(q, k, v, s, p, slots) for p in pools]
        timed(row, "ours graph", lambda: graph_ms(ours), rep=None)
        for bv, nw in DECODE_TILES:
            fns = [lambda p=p: recurrent_decode(q, k, v, s, p, slots, block_v=bv, num_warps=nw) for p in pools]
            timed(row, f"ours graph bv{bv}-w{nw}", lambda: graph_ms(fns), rep=None)
        timed(row, "ours eager", ours[0])
        if fused_recurrent_simple_gla is not None:
            fla = [lambda p=p: fused_recurrent_simple_gla(q[:, None], k[:, None], v[:, None], g_gamma=-s, scale=1.0,
                                                          initial_state=p, output_final_state=True) for p in pools]
            timed(row, "fla graph", lambda: graph_ms(fla), rep=None)
            timed(row, "fla eager", fla[0])
        timed(row, "torch eager", lambda: naive.decode(q, k, v, s, pools[0], slots), rep=100)
        for key in [k for k in row if k.startswith(("ours", "fla", "torch")) and not k.endswith("error")]:
            row[key] *= 1e3  # ms -> µs
        rows.append(row)
        del pools
        torch.cuda.empty_cache()
    return rows


def table(res, prefill, decode, copy_bw):
    nan = float("nan")
    print(f"\n{torch.cuda.get_device_name()}  copy ceiling {copy_bw / 1e12:.2f} TB/s")
    for k, e in res.items():
        print(f"  err {k}: " + " / ".join(f"{x:.2e}" if isinstance(x, float) else str(x) for x in e))
    print("prefill ns/token·head: ours default, ours best (config, fraction of copy ceiling), fla, fla/best")
    for r in prefill:
        n = r["T"] * r["H"] / 1e6
        ours = {k: v for k, v in r.items() if k.startswith("ours") and isinstance(v, float)}
        best = min(ours, key=ours.get) if ours else "none"
        t_best, fla, dflt = ours.get(best, nan), r.get("fla", nan), r.get(f"ours {DEFAULT}", nan)
        line = f"  H={r['H']:>2} T={r['T']:>6}: {dflt / n:.3f}  {t_best / n:.3f} ({best[5:]}, "
        line += f"{r['floor_ms'] / t_best:.0%})  fla {fla / n:.3f}  x{fla / t_best:.2f}"
        print(line + (f"  torch {r['torch block loop'] / n:.1f}" if "torch block loop" in r else ""))
    for r in prefill:
        for name, kt in r.get("kernel_us", {}).items():
            print(f"  H={r['H']} T={r['T']} {name}: " + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else v
                                                             for k, v in kt.items()))
    print("decode µs (TB/s of state traffic): ours best graph | ours eager, fla graph | eager, torch eager")
    for r in decode:
        tb = lambda us: r["state_MB"] / us  # noqa: E731
        o = min([v for k, v in r.items() if k.startswith("ours graph") and isinstance(v, float)] or [nan])
        f = r.get("fla graph", nan)
        print(f"  B={r['B']:>3} H={r['H']:>2}: ours {o:.1f} ({tb(o):.2f}) | {r.get('ours eager', nan):.1f}"
              f"  fla {f:.1f} ({tb(f):.2f}) | {r.get('fla eager', nan):.1f}  torch {r.get('torch eager', nan):.1f}")


def main():
    torch.manual_seed(0)
    copy_bw = copy_ceiling()
    res = {}
    if EXTRA:
        small_d_errors(res)
    res.update(correctness())
    prefill = bench_prefill(copy_bw)
    decode = [] if EXTRA else bench_decode(copy_bw)
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                fla=getattr(sys.modules.get("fla"), "__version__", "not importable"), copy_TBps=copy_bw / 1e12,
                quick=QUICK, default_tiling=DEFAULT)
    out = os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results")
    card = "h200" if "H200" in meta["device"] else "h100" if "H100" in meta["device"] else "gpu"
    with open(os.path.join(out, f"kernels_{card}{'_extra' if EXTRA else ''}.json"), "w") as f:
        json.dump(dict(meta=meta, errors=res, prefill_ms=prefill, decode_us=decode), f, indent=1)
    table(res, prefill, decode, copy_bw)


if __name__ == "__main__":
    main()
