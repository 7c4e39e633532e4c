"""Full-width M1 (hidden 6144, 64 heads, 32 experts of 9216, int8 experts, random weights) on 1..N GPUs.

    python bench/scale.py                                   # 1 GPU: decode at 8 and 16 layers, prefill on 8
    python bench/scale.py --tp 2                            # our own spawner (one process per GPU, NCCL)
    torchrun --nproc-per-node 4 bench/scale.py              # or torchrun
    python bench/scale.py --smoke --layers 8 --prompts 512 1024 --chunk-sweep 256 512 --batches 1 2   # CPU dry run

One model of max(--layers) layers (a layer every 8th softmax, the rest lightning), run through the engine's
ModelRunner with fewer layers by cutting its layer list. Measures, warm: decode ms/step at each batch with the decode
CUDA graphs and eagerly, side by side, against the weight-bandwidth floor (bytes a step must read / the measured copy
ceiling); prefill seconds of each prompt on --prefill-layers layers with the fastest chunk size of a sweep, and the
peak memory of every GPU next to the memory plan's prediction (bench/prefill_overlap.py); the shortest prompt once
more with the runner's overlap off and on (GPU idle between chunks, bit-equal last logits); a batch-1 decode step at
128k of context vs 256; the softmax attention kernel's and the int8 MoE's TFLOP/s as shares of the bf16 peak
measured in the same run; the projected full-M1 TTFT on 8 GPUs for the longest prompt (formula in the JSON).
Prints a table last and writes JSON to $OUT (or bench/results).
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine.runtime.cache import ModelCache  # noqa: E402
from engine.model.config import ModelConfig  # noqa: E402
from engine.model.memory_plan import weights_per_gpu  # noqa: E402
from engine.model.prefill_chunk import PREFILL_CHUNK_TOKENS  # noqa: E402
from engine.model.model import MiniMaxM1  # noqa: E402
from engine.model.tp_group import TPGroup, init_group  # noqa: E402
from engine.runtime.parallel import free_port  # noqa: E402
from engine.runtime.runner import ModelRunner, StepItem  # noqa: E402
from engine.runtime.worker import local_config  # noqa: E402
from kernels.moe import fused_moe  # noqa: E402
from bench.prefill_overlap import memory_row, overlap_rows  # noqa: E402

M1 = dict(architectures=["MiniMaxM1ForCausalLM"], hidden_size=6144, intermediate_size=9216, num_attention_heads=64,
          num_key_value_heads=8, head_dim=128, vocab_size=200064, num_local_experts=32, num_experts_per_tok=2,
          rotary_dim=64, rope_theta=10_000_000, rms_norm_eps=1e-5, postnorm=True,
          layernorm_full_attention_alpha=3.5565588200778455, layernorm_linear_attention_alpha=3.5565588200778455,
          layernorm_mlp_alpha=3.5565588200778455)
SMOKE = dict(hidden_size=128, intermediate_size=256, num_attention_heads=8, num_key_value_heads=4, head_dim=16,
             vocab_size=1024, rotary_dim=8)  # --smoke: this script's code path at toy width on CPU (torch kernels)
BLOCK = 256
START = time.perf_counter()
DEV = "cuda"


def m1_config(layers: int, smoke: bool = False) -> ModelConfig:
    attn = [1 if (i + 1) % 8 == 0 else 0 for i in range(layers)]
    return ModelConfig.from_dict({**M1, **(SMOKE if smoke else {}), "num_hidden_layers": layers, "attn_type_list": attn})


def randomize(model: torch.nn.Module) -> None:
    """Random weights of the real scale: N(0, 1/fan_in) in bf16, uniform int8 with matching row scales."""
    gen = torch.Generator(device=DEV).manual_seed(1234 + dist.get_rank() if dist.is_initialized() else 1234)
    for name, p in model.named_parameters():
        if p.dtype == torch.int8:
            p.data.random_(-127, 128, generator=gen)
        elif name.endswith("_scale"):
            fan_in = model.cfg.hidden_size if "w13" in name else model.cfg.intermediate_size
            p.data.fill_(1.0 / (73.3 * fan_in ** 0.5))
        elif p.dim() == 1:
            p.data.fill_(1.0)
        else:
            p.data.normal_(0, p.shape[-1] ** -0.5, generator=gen)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()


def timed(fn, reps: int, warmup: bool = True) -> float:
    """Median seconds of fn() over `reps` runs (after one warm-up unless told not to)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def copy_ceiling() -> float:
    """Device-to-device copy bandwidth, bytes read + written per second."""
    a = torch.empty(1 << (30 if DEV == "cuda" else 24), dtype=torch.uint8, device=DEV)
    b = torch.empty_like(a)
    return 2 * a.numel() / timed(lambda: b.copy_(a), 10)


def bf16_peak() -> float:
    n = 8192 if DEV == "cuda" else 512
    a = torch.randn(n, n, device=DEV, dtype=torch.bfloat16)
    return 2 * n ** 3 / timed(lambda: a @ a, 10)


def decode_bytes(cfg: ModelConfig, tp: int, batch: int) -> float:
    """Bytes one decode step must read per GPU: all non-expert weights + the experts the batch routes to."""
    w = weights_per_gpu(cfg, tp, "experts_int8")
    E, k = cfg.num_experts, cfg.top_k
    touched = E * (1 - (1 - k / E) ** batch)  # expected distinct experts per layer, uniform routing
    return w["attention"] + w["lm_head"] + w["router+norms"] + w["experts"] * touched / E


def bench_moe(model, copy_bw: float, peak: float, sizes=(1, 8, 64, 8192)) -> dict:
    """One layer's int8 MoE (this rank's shard) at decode and prefill sizes."""
    moe = model.model.layers[0].block_sparse_moe
    moe_impl = "triton" if DEV == "cuda" else "torch"
    out = {}
    for T in sizes:
        x = torch.randn(T, moe.hidden, device=DEV, dtype=torch.bfloat16)
        w, ids = moe.route(x)
        t = timed(lambda: fused_moe(x, moe.w13, moe.w2, w, ids, moe.w13_scale, moe.w2_scale, impl=moe_impl), 20)
        distinct = ids.unique().numel()
        nbytes = distinct * (moe.w13[0].numel() + moe.w2[0].numel())
        flops = 2 * T * moe.top_k * (moe.w13[0].numel() + moe.w2[0].numel())
        out[f"moe_T{T}"] = {"ms": t * 1e3, "expert_GBps": nbytes / t / 1e9, "copy_fraction": nbytes / t / copy_bw,
                            "TFLOPs": flops / t / 1e12, "bf16_peak_fraction": flops / t / peak}
    x = torch.randn(1, moe.hidden, device=DEV, dtype=torch.bfloat16)
    w, ids = moe.route(x)
    sel = ids.flatten()  # dequantize only the experts this token reads (all of them would not fit beside the model)
    w13 = (moe.w13[sel].float() * moe.w13_scale[sel][..., None]).to(torch.bfloat16)
    w2 = (moe.w2[sel].float() * moe.w2_scale[sel][..., None]).to(torch.bfloat16)
    ref_ids = torch.arange(ids.numel(), device=DEV).view_as(ids)
    t = timed(lambda: fused_moe(x, w13, w2, w, ref_ids, impl="torch"), 20)
    out["moe_T1_bf16_torch_ms"] = t * 1e3
    return out


def bench_allreduce(tp: int) -> float | None:
    if tp == 1:
        return None
    x = torch.randn(1, 6144, device=DEV, dtype=torch.bfloat16)
    return timed(lambda: [dist.all_reduce(x) for _ in range(100)], 5) / 100 * 1e6


def run_prefill(runner, length: int, chunk: int, verbose: bool, lm_head_every_chunk: bool = False):
    """(seconds, block table, last chunk's logits) of a `length`-token prompt in slot 0, `chunk` tokens per step (one
    timed run; a short warm-up chunk first compiles the kernels at this size). As the engine does, only the last
    chunk runs the LM head (`lm_head_every_chunk`: every chunk, as the engine did before)."""
    blocks = list(range(-(-(length + 64) // BLOCK)))
    runner.run([StepItem([7] * min(chunk, length), 0, 0, blocks)])
    sync()
    t0 = time.perf_counter()
    for start in range(0, length, chunk):
        n = min(chunk, length - start)
        logits = runner.run([StepItem([7] * n, start, 0, blocks)],
                            need_logits=lm_head_every_chunk or start + n == length)
        if verbose and length > 200_000 and (start // chunk) % 16 == 15:
            sync()
            print(f"  prefill {start + n}/{length} tokens, {time.perf_counter() - t0:.1f} s", flush=True)
    sync()
    return time.perf_counter() - t0, blocks, logits


def decode_from(runner, items_at, steps: int) -> float:
    """Median seconds of a decode step; items_at(step) -> the step's StepItems."""
    pos = [0]

    def step():
        runner.run(items_at(pos[0]))
        pos[0] += 1
    step()
    return timed(step, steps)


def run_decode(runner, batch: int, context: int, steps: int) -> float:
    per = -(-(context + 2 * steps + 4) // BLOCK)
    tables = [list(range(b * per, (b + 1) * per)) for b in range(batch)]
    g = torch.Generator().manual_seed(batch)  # distinct tokens per sequence: the batch routes to many experts
    vocab = runner.model.cfg.vocab_size  # --smoke: a toy vocabulary
    prompts = torch.randint(min(1000, vocab // 2), min(190000, vocab), (batch, context + steps + 2),
                            generator=g).tolist()
    runner.run([StepItem(prompts[b][:context], 0, b, tables[b]) for b in range(batch)])
    return decode_from(runner, lambda i: [StepItem([prompts[b][context + i % (steps + 2)]], context + i, b, tables[b])
                                          for b in range(batch)], steps)


def attention_rate(layer, context: int, chunk: int, sdpa: bool = False) -> dict:
    """The softmax layer's attention alone: `chunk` queries at the end of a `context`-token paged KV (slot 0's
    blocks, filled by the prefill). TFLOP/s counted causally: 4*H*D per visible (query, key) pair."""
    from kernels.attention import paged_prefill_attention
    H, D = layer.num_heads, layer.head_dim
    q = torch.randn(chunk, H, D, device=DEV, dtype=torch.bfloat16)
    nb = -(-context // BLOCK)
    bt = torch.arange(nb, device=DEV, dtype=torch.int32)[None]
    cu = torch.tensor([0, chunk], device=DEV, dtype=torch.int32)
    lens = torch.tensor([context], device=DEV, dtype=torch.int32)
    flops = 4 * H * D * (chunk * (context - chunk) + chunk * (chunk + 1) / 2)
    t = timed(lambda: paged_prefill_attention(q, layer.k_cache, layer.v_cache, bt, cu, lens, BLOCK, D ** -0.5,
                                              max_seqlen_q=chunk), 3)
    out = {"ms": t * 1e3, "TFLOPs": flops / t / 1e12}
    if sdpa:
        rows = torch.arange(context, device=DEV)
        ts = timed(lambda: layer._attend(q, layer.k_cache[rows], layer.v_cache[rows]), 3)
        out["sdpa_ms"], out["sdpa_TFLOPs"] = ts * 1e3, flops / ts / 1e12
    return out


def decode_rows(runner, model, all_layers, a, size, copy_bw) -> list[dict]:
    """Per layer count: decode at each batch with CUDA graphs and eagerly, side by side."""
    rows = []
    for L in a.layers:
        model.model.layers = all_layers[:L]
        cfg = m1_config(L, a.smoke)
        runner.graphs = None
        graphs = timed_safe(lambda: runner.capture_graphs(64, only=a.batches)) if DEV == "cuda" else None
        if graphs:
            print(f"L={L}: graphs {graphs['buckets']} captured in {graphs['seconds']:.1f} s, "
                  f"{graphs['bytes'] / 2**20:.0f} MiB", flush=True)
        saved = runner.graphs
        for batch in a.batches:
            floor = decode_bytes(cfg, size, batch) / copy_bw
            for mode in ("graphs", "eager") if saved else ("eager",):
                runner.graphs = saved if mode == "graphs" else None
                t = timed_safe(lambda: run_decode(runner, batch, a.context, a.steps))
                replayed = mode == "graphs" and runner.last_bucket is not None
                rows.append({"test": f"L{L} decode b={batch} {mode}", "layers": L, "batch": batch, "mode": mode,
                             "replayed": replayed, "ms_per_step": t and t * 1e3, "tok_s": t and batch / t,
                             "floor_ms": floor * 1e3, "floor_fraction": t and floor / t,
                             "est_80_layers_tok_s": t and batch / (t * 80 / L)})
        runner.graphs = saved
    return rows


def prefill_rows(runner, model, all_layers, a, rank, checkpoint=None) -> tuple[list[dict], dict]:
    """On a.prefill_layers layers: chunk sizes on the 128k prompt, then every prompt length with the best chunk,
    peak memory, a batch-1 decode step at 128k of context vs 256, and the softmax attention's own TFLOP/s."""
    L = a.prefill_layers
    model.model.layers = all_layers[:L]
    runner.graphs = None
    if DEV == "cuda":
        timed_safe(lambda: runner.capture_graphs(1, only=[1]))
    rows, extra = [], {}
    sweep_len = min(a.prompts)
    best = None
    for chunk in a.chunk_sweep:
        t = timed_safe(lambda: run_prefill(runner, sweep_len, chunk, False)[0])
        rows.append({"test": f"L{L} prefill {sweep_len} chunk {chunk}", "seconds": t, "tok_s": t and sweep_len / t})
        print(rows[-1], flush=True)
        if t and (best is None or t < best[0]):
            best = (t, chunk)
    chunk = best[1] if best else a.chunk
    extra["best_chunk"] = chunk
    if a.overlap_check:  # the host between chunks: overlap off vs on, GPU idle gaps, bit-equal last logits
        more = timed_safe(lambda: overlap_rows(runner, run_prefill, sweep_len, chunk, f"L{L}")) or []
        for r in more:
            print(r, flush=True)
        rows += more
    soft = next(l.self_attn for l in model.model.layers if not l.is_lightning)
    for length in a.prompts:
        if length == max(a.prompts) and a.deadline and time.perf_counter() - START > a.deadline:
            print(f"skipping the {length}-token prompt: past the {a.deadline} s deadline", flush=True)
            continue
        if DEV == "cuda":
            torch.cuda.reset_peak_memory_stats()
        res = timed_safe(lambda: run_prefill(runner, length, chunk, rank == 0))
        t, blocks, _ = res if res else (None, None, None)
        peak = torch.cuda.max_memory_allocated() / 1e9 if DEV == "cuda" else None
        rows.append({"test": f"L{L} prefill {length}", "seconds": t, "tok_s": t and length / t, "peak_GB": peak,
                     "chunk": chunk})
        print(rows[-1], flush=True)
        rows.append(timed_safe(lambda: memory_row(model, model.cfg, runner.cache, runner, a.tp, length, chunk, peak))
                    or {"test": f"memory prefill {length}", "failed": True})
        print(rows[-1], flush=True)
        if t and length == sweep_len:  # batch-1 decode on top of this context, graphs on
            far = [len(blocks) + 1, len(blocks) + 2]  # a 256-token context in two blocks past the prompt's
            ms = timed_safe(lambda: decode_from(runner, lambda i: [StepItem([13], length + i, 0, blocks)], a.steps))
            short = timed_safe(lambda: decode_from(runner, lambda i: [StepItem([13], 256 + i, 1, far)], a.steps))
            if ms and short:
                rows.append({"test": f"L{L} decode b=1 ctx {length}", "ms_per_step": ms * 1e3, "tok_s": 1 / ms,
                             "vs_ctx256": ms / short, "ctx256_ms": short * 1e3})
                print(rows[-1], flush=True)
            for ctx in a.prompts:  # the attention kernel alone, before the longest prompt (bounded run time)
                extra[f"attention_chunk16k_ctx{ctx}"] = timed_safe(
                    lambda: attention_rate(soft, ctx, min(64 if a.smoke else 16384, ctx), sdpa=ctx <= 131072))
                print(ctx, extra[f"attention_chunk16k_ctx{ctx}"], flush=True)
        if checkpoint:
            checkpoint(rows, extra)
    return rows, extra


def projection(result: dict, a) -> dict | None:
    """Full M1 (70 lightning + 10 softmax layers) TTFT on 8 GPUs for 1M tokens, from this run's per-layer costs."""
    rows = {r["test"]: r for r in result["rows"]}
    L, n = a.prefill_layers, max(a.prompts)
    total = rows.get(f"L{L} prefill {n}", {}).get("seconds")
    att = result["extra"].get(f"attention_chunk16k_ctx{n}")
    if not total or not att:
        return None
    soft_layers = sum(1 for i in range(L) if (i + 1) % 8 == 0)
    att_flops = 4 * 64 * 128 * n * n / 2
    t_att = att_flops / (att["TFLOPs"] * 1e12)  # one softmax layer's attention over the whole prompt
    per_layer = (total - soft_layers * t_att) / L  # projections, MoE, lightning, norms: per layer, per 1M tokens
    comm = 2 * 80 * n * 6144 * 2 * 2 * 7 / 8 / (a.busbw * 1e9)  # ring all-reduce bytes per GPU / bus bandwidth
    ideal = (80 * per_layer + 10 * t_att) / 8
    return {"formula": "TTFT_8 = (80 * c_layer + 10 * t_attn) / 8 + comm; c_layer = (t_prefill_L - n_soft * t_attn) / L,"
                       " t_attn = 4*64*128*N^2/2 / attention TFLOP/s at the 1M-context chunk; comm = 160 all-reduces"
                       " of N x 6144 bf16, 2*(7/8) of the bytes per GPU at the assumed bus bandwidth",
            "c_layer_s": per_layer, "t_attn_s": t_att, "comm_s": comm, "busbw_GBps_assumed": a.busbw,
            "ttft_ideal_s": ideal, "ttft_with_comm_s": ideal + comm}


def main_rank(rank: int, size: int, init_method: str | None, a) -> None:
    global DEV
    DEV = "cpu" if a.smoke else "cuda"
    tp = init_group(rank, size, init_method, DEV) if size > 1 else TPGroup()
    a.layers = sorted(int(x) for x in a.layers)
    cfg = m1_config(max(a.layers), a.smoke)
    model = MiniMaxM1(cfg, torch.bfloat16, DEV, tp, "experts_int8")
    randomize(model)
    all_layers = model.model.layers
    local = local_config(cfg, tp)
    longest = max(a.prompts) + 1024
    rows_needed = longest + max(a.batches) * (a.context + 2 * a.steps + 4 + BLOCK) + 4 * BLOCK
    cache = ModelCache(local, max(a.batches) + 1, -(-rows_needed // BLOCK), BLOCK, torch.bfloat16, DEV)
    runner = ModelRunner(model, cache, DEV, max_num_seqs=max(a.batches), max_model_len=longest)
    copy_bw, peak = copy_ceiling(), bf16_peak()
    device = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (smoke)"
    result = {"device": device, "gpus": size, "layers": a.layers, "prefill_layers": a.prefill_layers,
              "torch": torch.__version__, "copy_TBps": copy_bw / 1e12, "bf16_TFLOPs": peak / 1e12,
              "allreduce_us": bench_allreduce(size), "rows": [], "extra": {}}

    def checkpoint(rows, extra):
        result["rows"], result["extra"] = rows, {**result["extra"], **extra}
        if rank == 0:
            write_json(result, a.out)
    timed_safe(lambda: run_decode(runner, 1, a.context, 3))  # warm-up: the first decode in a process ran ~6x slow
    rows = decode_rows(runner, model, all_layers, a, size, copy_bw)
    checkpoint(rows, {})
    model.model.layers = all_layers[:a.prefill_layers]
    moe = timed_safe(lambda: bench_moe(model, copy_bw, peak, (1, 8) if a.smoke else (1, 8, 64, 8192, 16384)))
    checkpoint(rows, {"moe": moe or {}})
    more, extra = prefill_rows(runner, model, all_layers, a, rank, lambda r, e: checkpoint(rows + r, e)) \
        if a.prompts else ([], {})
    checkpoint(rows + more, extra)
    result["projection_full_m1_8gpu_1M"] = timed_safe(lambda: projection(result, a))
    if rank == 0:
        report(result, a.out)
    if size > 1:
        dist.destroy_process_group()


def timed_safe(fn):
    """fn()'s result, or None when it fails (out of memory or any error: reported, the run goes on)."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one failed measurement must not lose the others
        print(f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
        traceback.print_exc()
        if DEV == "cuda":
            torch.cuda.empty_cache()
        return None


def write_json(result: dict, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    card = "h200" if "H200" in result["device"] else "h100" if "H100" in result["device"] else "dev"
    path = os.path.join(out_dir, f"scale_{card}_tp{result['gpus']}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    return path


def report(result: dict, out_dir: str) -> None:
    path = write_json(result, out_dir)
    print(f"\n{result['device']} x{result['gpus']}, full-width layers {result['layers']}, int8 experts; copy "
          f"{result['copy_TBps']:.2f} TB/s, bf16 {result['bf16_TFLOPs']:.0f} TFLOP/s  ->  {path}")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    print(f"{'test':<34}{'ms/step|s':>11}{'tok/s':>11}{'floor ms':>10}{'of floor':>10}{'peak GB':>9}")
    for r in result["rows"]:
        if "measured_peak_GB_per_gpu" in r:  # memory: every GPU's peak vs the plan
            print(f"{r['test']:<34} peak GB per GPU {[fmt(p, '.1f') for p in r['measured_peak_GB_per_gpu']]}; plan "
                  f"{r['plan_peak_GB']:.1f} (engine: this prompt's KV), {r['plan_as_allocated_GB']:.1f} as allocated")
            continue
        first = r.get("ms_per_step", r.get("seconds"))
        print(f"{r['test']:<34}{fmt(first, '.3f'):>11}{fmt(r.get('tok_s'), '.1f'):>11}"
              f"{fmt(r.get('floor_ms'), '.3f'):>10}{fmt(r.get('floor_fraction'), '.0%'):>10}"
              f"{fmt(r.get('peak_GB'), '.1f'):>9}" + idle_text(r))
    peak = result["bf16_TFLOPs"]
    for k, v in result["extra"].items():
        if k == "moe":
            for name, m in v.items():
                print(f"{name:<22}" + (f"{m:.3f} ms" if isinstance(m, float) else
                                       f"{m['ms']:.3f} ms, {m['copy_fraction']:.0%} of copy, "
                                       f"{m['TFLOPs']:.1f} TFLOP/s ({m['bf16_peak_fraction']:.0%} of bf16)"))
        elif isinstance(v, dict) and "TFLOPs" in v:
            print(f"{k:<34} {v['ms']:.1f} ms, {v['TFLOPs']:.0f} TFLOP/s ({v['TFLOPs'] / peak:.0%} of bf16)"
                  + (f"; SDPA {v['sdpa_TFLOPs']:.0f}" if "sdpa_TFLOPs" in v else ""))
        else:
            print(f"{k:<34} {v}")
    print("projection:", json.dumps(result["projection_full_m1_8gpu_1M"], indent=1))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tp", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    ap.add_argument("--layers", nargs="+", default=["8", "16"], help="full-width layer counts for decode")
    ap.add_argument("--prefill-layers", type=int, default=8, help="layers for the prefill measurements")
    ap.add_argument("--batches", type=ints, nargs="+", default=[1, 8, 64])
    ap.add_argument("--prompts", type=ints, nargs="*", default=[131072, 1048576])
    ap.add_argument("--chunk", type=int, default=PREFILL_CHUNK_TOKENS, help="prefill chunk when the sweep measures "
                    "nothing (default: the engine's, engine/model/prefill_chunk.py)")
    ap.add_argument("--chunk-sweep", type=ints, nargs="*", default=[8192, 16384, 32768],
                    help="chunk sizes tried on the shortest prompt; the fastest runs the others")
    ap.add_argument("--overlap-check", action=argparse.BooleanOptionalAction, default=True,
                    help="prefill the shortest prompt with the runner's overlap off and on (bench/prefill_overlap.py)")
    ap.add_argument("--busbw", type=float, default=350.0, help="assumed all-reduce bus bandwidth (GB/s), projection")
    ap.add_argument("--deadline", type=float, default=0, help="seconds after which the longest prompt is skipped")
    ap.add_argument("--context", type=int, default=256, help="tokens of context before the decode steps")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="toy width on CPU (gloo), to check the script itself")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results"))
    a = ap.parse_args(argv)
    for name in ("batches", "prompts", "chunk_sweep"):  # "--prompts 131072,1048576" == "--prompts 131072 1048576"
        setattr(a, name, [n for part in getattr(a, name) for n in (part if isinstance(part, list) else [part])])
    return a


def idle_text(r: dict) -> str:
    if r.get("gpu_gap_ms_median") is None:
        return ""
    return f"  GPU idle between chunks {r['gpu_gap_ms_median']:.3f} ms median, {r['gpu_gap_ms_total']:.1f} ms in all"


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


if __name__ == "__main__":
    args = parse_args()
    if "RANK" in os.environ:  # torchrun
        main_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", args)
    elif args.tp > 1:
        import torch.multiprocessing as mp
        mp.spawn(main_rank, args=(args.tp, f"tcp://127.0.0.1:{free_port()}", args), nprocs=args.tp)
    else:
        main_rank(0, 1, None, args)
