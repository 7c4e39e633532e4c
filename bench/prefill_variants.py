"""Prefill kernel variants (issue 13 items 1-2) in ONE run: which attention / MoE variant to make the engine's default.

On one GPU, in about two minutes: the bf16 matmul peak (8192^3) measured first; then every variant of
- the paged causal prefill attention (kernels/attention/prefill.py: VARIANT flags x tiles), a 16,384-query chunk at
  the end of a 131,072-token context, H=64, KVH=8, D=128, bf16, cache blocks of 256 rows (shuffled); each output
  checked against the engine's SDPA path (gather, expand kv heads, causal_lower_right) before it is timed;
  FLOPs = 4 * D * H * sum of visible keys;
- the MoE prefill (kernels/moe/fused.py, whole fused_moe), int8 and bf16 experts, hidden 6144, intermediate 9216,
  32 experts, top-2, T = 8192 and 16384: the current path, SiLU*up fused into the gate/up GEMM (SILU_UP) with
  several tiles, int8 weights converted by bit arithmetic (FAST_INT8); each checked against naive.fused_moe;
  FLOPs = 2 * T * k * 3 * hidden * inter.
A variant that fails to compile (or to match) is recorded with its error and skipped; configurations past the time
budget are recorded as skipped. Prints a table (TFLOP/s, share of peak), the best of each family and the exact
lines to change to make it the default; writes JSON to --out. `--smoke` runs every variant at tiny sizes on CPU
through Triton's interpreter (TRITON_INTERPRET=1 is set by the script).
"""
import time

T0 = time.time()  # the budget counts from here (torch and CUDA start-up included)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

if "--smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from torch.nn.attention.bias import causal_lower_right  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels.attention import paged_prefill_attention  # noqa: E402
from kernels.attention import prefill as prefill_mod  # noqa: E402
from kernels.moe import fused as moe_fused, naive as moe_naive  # noqa: E402
from precompile import precompile  # noqa: E402  (bench/, the script's own directory)
from prefill_kernels import event_median, rel_err  # noqa: E402

# (variant, tiles) in priority order: the current default first; tiles (BLOCK_M, BLOCK_N, num_warps, num_stages)
BASE = prefill_mod.GPU_CONFIG[128]
ATT = [("", BASE), ("fold", BASE), ("tma", BASE), ("tma+fold", BASE), ("tma+fold+poly", BASE), ("fold+poly", BASE),
       ("tma+tmaq+fold", BASE), ("tma+fold", (128, 128, 8, 4)), ("tma+fold", (128, 128, 8, 2)),
       ("tma+fold+poly", (128, 128, 8, 4)), ("tma+fold", (64, 128, 4, 3)), ("tma+fold", (128, 64, 8, 3))]
# warp specialisation is the newest compiler path: compiled last, after the other results are written, so that a
# compiler crash cannot take them down
ATT_WS = [("ws", BASE), ("tma+fold+ws", BASE), ("tma+fold+poly+ws", BASE), ("tma+fold+ws", (128, 128, 4, 3))]
# (SILU_UP on?, its gate/up tiles (block_m, N, K, warps, stages, swap, group_m), FAST_INT8 on?[, PREFILL_TILES for
# the down GEMM and the unfused gate/up, else the current ones]); swap=True puts the converted weights in registers
SWAP8 = (128, 128, 64, 8, 4, True, 8)
MOE = {"int8": [(False, None, False), (False, None, True), (True, (128, 64, 64, 8, 4, False, 8), True),
                (True, (128, 64, 64, 8, 4, False, 8), False), (True, (128, 128, 64, 8, 3, False, 8), True),
                (True, (128, 64, 128, 8, 3, False, 8), True), (True, (128, 64, 64, 8, 3, True, 8), True),
                (False, None, True, SWAP8), (True, (128, 64, 64, 8, 4, True, 8), True, SWAP8)],
       "bf16": [(False, None, False), (True, (128, 128, 64, 8, 3, False, 8), False),
                (True, (128, 64, 64, 8, 4, False, 8), False)]}
NOISE = 1.02  # a variant must beat the current default by this factor to be advised
GPU = dict(H=64, KVH=8, D=128, BS=256, ctx=131072, n=16384, E=32, hidden=6144, inter=9216, Ts=(8192, 16384))
SMOKE = dict(H=2, KVH=1, D=32, BS=16, ctx=56, n=40, E=4, hidden=64, inter=48, Ts=(70,))


def timed(fn, dev, reps):
    """Median seconds of `reps` event-timed calls after one warm call (CPU: wall clock)."""
    if dev != "cpu":
        return event_median(fn, reps)
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak(dev):
    n = 8192 if dev == "cuda" else 256
    a, b = (torch.randn(n, n, device=dev, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n ** 3 / min(timed(lambda: a @ b, dev, 10) for _ in range(3)) / 1e12


def attention_setup(c, dev, g):
    """q, paged k/v (shuffled 256-row blocks), the kernel's args, the SDPA path's output and the FLOPs."""
    H, KVH, D, BS, L, n = c["H"], c["KVH"], c["D"], c["BS"], c["ctx"], c["n"]
    nb = -(-L // BS)
    tables = torch.randperm(nb, device=dev, generator=g).to(torch.int32)[None]
    k, v = (torch.randn(nb * BS, KVH, D, device=dev, generator=g).to(torch.bfloat16) for _ in range(2))
    q = torch.randn(n, H, D, device=dev, generator=g).to(torch.bfloat16)
    cu = torch.tensor([0, n], device=dev, dtype=torch.int32)
    lens = torch.tensor([L], device=dev, dtype=torch.int32)
    rows = tables[0].long()[torch.arange(L, device=dev) // BS] * BS + torch.arange(L, device=dev) % BS
    kx, vx = (t[rows].transpose(0, 1).repeat_interleave(H // KVH, 0)[None] for t in (k, v))
    ref = F.scaled_dot_product_attention(q.transpose(0, 1)[None], kx, vx, attn_mask=causal_lower_right(n, L),
                                         scale=D ** -0.5)[0].transpose(0, 1)
    flops = 4 * D * H * (n * (L - n) + n * (n + 1) // 2)
    return (q, k, v, tables, cu, lens, BS, D ** -0.5), ref, flops


def attention(c, dev, setup, att, first, pk, deadline, smoke):
    """Rows for the (variant, tiles) configurations `att`, numbered from `first`."""
    args, ref, flops = setup
    configs = [(variant, prefill_mod.CPU_CONFIG if smoke else tiles) for variant, tiles in att]
    call = lambda variant, tiles: paged_prefill_attention(*args, max_seqlen_q=c["n"], tiles=tiles,  # noqa: E731
                                                          variant=variant)
    compiled = precompile([lambda v=v, t=t: call(v, t) for v, t in configs], [prefill_mod], dev)
    print("attention precompile:", compiled, flush=True)
    rows = []
    for i, (variant, tiles) in enumerate(configs, first):
        r = {"family": "attention", "config": i, "variant": variant or "(default)", "tiles": list(tiles)}
        rows.append(r)
        if time.time() > deadline:
            r["error"] = "skipped: time budget"
            continue
        fn = lambda: call(variant, tiles)  # noqa: E731
        try:
            r["rel_err_vs_sdpa"] = rel_err(fn(), ref)
            if not r["rel_err_vs_sdpa"] < 1e-2:
                raise ValueError(f"mismatch vs SDPA: rel err {r['rel_err_vs_sdpa']:.3g}")
            t = timed(fn, dev, 1 if smoke else 3)
            r.update(ms=t * 1e3, TFLOPs=flops / t / 1e12, share=flops / t / 1e12 / pk)
        except Exception as e:  # a variant that does not compile or does not match is reported, not fatal
            r["error"] = f"{type(e).__name__}: {e}"[:300]
        print(r, flush=True)
    return rows


def moe_weights(dev, g, E, hidden, inter, int8):
    w13 = torch.randn(E, 2 * inter, hidden, device=dev, generator=g).to(torch.bfloat16) / hidden ** 0.5
    w2 = torch.randn(E, hidden, inter, device=dev, generator=g).to(torch.bfloat16) / inter ** 0.5
    if not int8:
        return w13, w2, None, None
    q = []
    for w in (w13, w2):
        s = w.float().abs().amax(-1) / 127
        q.append(((w.float() / s[..., None]).round().clamp(-127, 127).to(torch.int8), s))
    return q[0][0], q[1][0], q[0][1], q[1][1]


def call(args, kind, fuse, tiles, fast, prefill_tiles):
    """The whole triton fused MoE with SiLU * up fused into the gate/up GEMM (tiles `tiles`) or not, int8 weights
    converted by bit arithmetic (FAST_INT8) or not, with `prefill_tiles` as PREFILL_TILES."""
    if fuse:
        moe_fused.SILU_UP_TILES[kind] = tiles
    moe_fused.FAST_INT8 = fast
    moe_fused.PREFILL_TILES[kind] = prefill_tiles
    return moe_fused.triton_fused_moe(*args, silu_up=fuse)


def moe_name(fuse, fast, swap):
    """'+'-joined: silu_up, fast_int8, swap (PREFILL_TILES with the converted weights as the left operand)."""
    return "+".join(n for n, on in (("silu_up", fuse), ("fast_int8", fast), ("swap", swap)) if on) or "(default)"


def moe(c, dev, g, pk, deadline, smoke):
    rows = []
    if smoke:  # tiny stand-in tiles, and the prefill GEMM path even for a few slots
        moe_fused.SMALL_MAX_SLOTS = 0
        moe_fused.PREFILL_TILES.update(int8=(16, 32, 32, 4, 3, False, 2), bf16=(16, 32, 32, 4, 3, False, 2))
    for kind, configs in MOE.items():
        current = moe_fused.PREFILL_TILES[kind]
        configs = [(f, (16, 16, 32, 4, 3, t[5], 2) if smoke and f else t, fast,
                    current if not more else (16, 32, 32, 4, 3, more[0][5], 2) if smoke else more[0])
                   for f, t, fast, *more in configs]
        w = moe_weights(dev, g, c["E"], c["hidden"], c["inter"], kind == "int8")
        for T in c["Ts"]:
            x = torch.randn(T, c["hidden"], device=dev, generator=g).to(torch.bfloat16)
            weights, ids = torch.randn(T, c["E"], device=dev, generator=g).softmax(-1).topk(2, -1)
            weights = (weights / weights.sum(-1, keepdim=True)).to(torch.bfloat16)
            args = (x, w[0], w[1], weights, ids, w[2], w[3])
            ref = moe_naive.fused_moe(*args)
            flops = 2 * T * 2 * 3 * c["hidden"] * c["inter"]
            if T == c["Ts"][0]:
                compiled = precompile([lambda cf=cf: call(args, kind, *cf) for cf in configs], [moe_fused], dev)
                print(f"moe {kind} precompile:", compiled, flush=True)
            for i, (fuse, tiles, fast, prefill_tiles) in enumerate(configs):
                r = {"family": f"moe {kind} T={T}", "config": i,
                     "variant": moe_name(fuse, fast, prefill_tiles != current),
                     "tiles": list(tiles or prefill_tiles), "prefill_tiles": list(prefill_tiles)}
                rows.append(r)
                if time.time() > deadline:
                    r["error"] = "skipped: time budget"
                    continue
                fn = lambda: call(args, kind, fuse, tiles, fast, prefill_tiles)  # noqa: E731
                try:
                    r["rel_err_vs_ref"] = rel_err(fn(), ref)
                    if not r["rel_err_vs_ref"] < 3e-2:  # the reference sums the k expert outputs in bf16
                        raise ValueError(f"mismatch vs naive.fused_moe: rel err {r['rel_err_vs_ref']:.3g}")
                    t = timed(fn, dev, 1 if smoke else 5)
                    r.update(ms=t * 1e3, TFLOPs=flops / t / 1e12, share=flops / t / 1e12 / pk)
                except Exception as e:
                    r["error"] = f"{type(e).__name__}: {e}"[:300]
                print(r, flush=True)
        moe_fused.PREFILL_TILES[kind] = current
        del w
        if dev == "cuda":
            torch.cuda.empty_cache()
    return rows


def best(rows):
    """{family: best row} over the rows that ran (highest TFLOP/s)."""
    out = {}
    for r in rows:
        if "TFLOPs" in r and ("TFLOPs" not in out.get(r["family"], {}) or r["TFLOPs"] > out[r["family"]]["TFLOPs"]):
            out[r["family"]] = r
    return out


def advice(rows):
    """The lines to change so the engine's defaults become the winners."""
    b = best(rows)
    lines = []
    att = b.get("attention")
    base = next((r for r in rows if r["family"] == "attention" and r["config"] == 0 and "TFLOPs" in r), None)
    if att and base and att["TFLOPs"] < NOISE * base["TFLOPs"]:
        lines.append(f"kernels/attention/prefill.py: keep the default (best {att['variant']} {tuple(att['tiles'])} is "
                     f"within {NOISE - 1:.0%} of it)")
    elif att:
        lines.append(f"kernels/attention/prefill.py: GPU_CONFIG[128] = {tuple(att['tiles'])}; "
                     f"VARIANT = {'' if att['variant'] == '(default)' else att['variant']!r}")
    for kind in MOE:
        fams = [f for f in b if f.startswith(f"moe {kind} ")]
        score = {}
        for r in rows:  # mean share over the T sweep, only for variants/tiles that ran at every T
            if r["family"] in fams and "TFLOPs" in r:
                score.setdefault((r["config"], r["variant"], tuple(r["tiles"]), tuple(r["prefill_tiles"])),
                                 []).append(r["share"])
        score = {k: sum(v) / len(v) for k, v in score.items() if len(v) == len(fams)}
        if score:
            (i, variant, tiles, prefill_tiles), share = max(score.items(), key=lambda kv: kv[1])
            default = next((k + (v,) for k, v in score.items() if k[0] == 0), None)
            if default is not None and share < NOISE * default[-1]:
                _, variant, tiles, prefill_tiles, share = default
            line = f"kernels/moe/fused.py ({kind}, best {variant}, mean share {share:.1%}): "
            if "silu_up" in variant:
                line += f"SILU_UP[{kind!r}] = True; SILU_UP_TILES[{kind!r}] = {tiles}"
            else:
                line += f"keep SILU_UP[{kind!r}] = False"
            if kind == "int8":
                line += "; FAST_INT8 = " + str("fast_int8" in variant)
            if default is not None and prefill_tiles != default[3]:
                line += f"; PREFILL_TILES[{kind!r}] = {prefill_tiles}"
            lines.append(line)
    return lines


def table(rows, pk, dev_name):
    lines = [f"card: {dev_name}  bf16 peak {pk:.0f} TFLOP/s (measured in this run)",
             "| family | variant | tiles | ms | TFLOP/s | share of peak | rel err | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        err = r.get("rel_err_vs_sdpa", r.get("rel_err_vs_ref"))
        lines.append(f"| {r['family']} | {r['variant']} | {tuple(r['tiles'])} | {r.get('ms', float('nan')):.2f} | "
                     f"{r.get('TFLOPs', float('nan')):.0f} | {r.get('share', float('nan')):.1%} | "
                     f"{'' if err is None else f'{err:.1e}'} | {r.get('error', '')[:60]} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU through Triton's interpreter")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    ap.add_argument("--budget", type=float, default=105.0, help="seconds; configurations past it are skipped")
    a = ap.parse_args()
    dev = "cpu" if a.smoke else "cuda"
    c = SMOKE if a.smoke else GPU
    g = torch.Generator(device=dev).manual_seed(0)
    name = "cpu (interpreter smoke)" if a.smoke else torch.cuda.get_device_name()
    r = {"device": name, "torch": torch.__version__, "triton": triton.__version__, "sizes": c,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    r["bf16_peak_TFLOPs"] = pk = peak(dev)
    print(r, flush=True)
    budget = 1e9 if a.smoke else a.budget
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "prefill_variants_" + ("smoke" if a.smoke else name.split()[-1].lower()) + ".json")
    setup = attention_setup(c, dev, g)
    rows = attention(c, dev, setup, ATT, 0, pk, T0 + budget * 0.45, a.smoke)
    rows += moe(c, dev, g, pk, T0 + budget * 0.85, a.smoke)
    report(r, rows, pk, path, "so far, without warp specialisation (a compiler crash past here leaves these)", False)
    rows += attention(c, dev, setup, ATT_WS, len(ATT), pk, T0 + budget, a.smoke)
    report(r, rows, pk, path, "final", True)


def report(r, rows, pk, path, what, full):
    """JSON to `path`; the table (`full`), the best of each family and the lines to change, printed."""
    r.update(rows=rows, best=best(rows), advice=advice(rows), wall_s=time.time() - T0)
    with open(path, "w") as f:
        json.dump(r, f, indent=1)
    print(f"\n===== {what} =====")
    if full:
        print(table(rows, pk, r["device"]))
    print("\nbest per family:")
    for fam, b in best(rows).items():
        print(f"  {fam}: {b['variant']} {tuple(b['tiles'])} {b['TFLOPs']:.0f} TFLOP/s = {b['share']:.1%} of peak")
    print("\nto make the winners the engine's defaults, change:")
    for line in advice(rows):
        print("  " + line)
    print(f"\nwall {time.time() - T0:.0f} s; JSON: {path}")


if __name__ == "__main__":
    main()
