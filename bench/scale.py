"""Full-width M1 (hidden 6144, 64 heads, 32 experts of 9216, int8 experts, random weights) on 1..N GPUs.

    python bench/scale.py --layers auto                         # 1 GPU, as many layers as fit
    python bench/scale.py --tp 2 --layers auto                  # our own spawner (one process per GPU, NCCL)
    torchrun --nproc-per-node 4 bench/scale.py --layers auto    # or torchrun
    python bench/scale.py --tp 4 --layers 80 --prompts 8192 1048576 --batches 1   # full model on 4xH200

Measures decode tokens/s (batch 1/8/64) and chunked prefill tokens/s (8k, 128k) through the engine's ModelRunner,
against the weight-bandwidth floor (bytes each decode step must read / the measured copy ceiling), plus the int8 MoE
kernel's share of the copy ceiling (decode) and of bf16 peak (prefill) on one layer, and the all-reduce latency.
Prints a table last and writes JSON to $OUT (or bench/results).
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from engine.runtime.cache import ModelCache  # noqa: E402
from engine.model.config import ModelConfig  # noqa: E402
from engine.model.memory_plan import weights_per_gpu  # noqa: E402
from engine.model.model import MiniMaxM1  # noqa: E402
from engine.model.tp_group import TPGroup, init_group  # noqa: E402
from engine.runtime.parallel import free_port  # noqa: E402
from engine.runtime.runner import ModelRunner, StepItem  # noqa: E402
from engine.runtime.worker import local_config  # noqa: E402
from kernels.moe import fused_moe  # noqa: E402

M1 = dict(architectures=["MiniMaxM1ForCausalLM"], hidden_size=6144, intermediate_size=9216, num_attention_heads=64,
          num_key_value_heads=8, head_dim=128, vocab_size=200064, num_local_experts=32, num_experts_per_tok=2,
          rotary_dim=64, rope_theta=10_000_000, rms_norm_eps=1e-5, postnorm=True,
          layernorm_full_attention_alpha=3.5565588200778455, layernorm_linear_attention_alpha=3.5565588200778455,
          layernorm_mlp_alpha=3.5565588200778455)
SMOKE = dict(hidden_size=128, intermediate_size=256, num_attention_heads=8, num_key_value_heads=4, head_dim=16,
             vocab_size=1024, rotary_dim=8)  # --smoke: this script's code path at toy width on CPU (torch kernels)
BLOCK = 256
DEV = "cuda"
HEADROOM = 12 << 30  # activations of an 8k-token chunk, allocator slack


def m1_config(layers: int, smoke: bool = False) -> ModelConfig:
    attn = [1 if (i + 1) % 8 == 0 else 0 for i in range(layers)]
    return ModelConfig.from_dict({**M1, **(SMOKE if smoke else {}), "num_hidden_layers": layers, "attn_type_list": attn})


def fit_layers(tp: int, max_prompt: int, max_batch: int) -> int:
    """Most layers (<= 80) whose int8 weights, KV of the longest prompt and states fit this GPU."""
    free = torch.cuda.mem_get_info()[0]
    for layers in range(80, 0, -1):
        cfg = m1_config(layers)
        local = local_config(cfg, TPGroup(0, tp))
        need = sum(weights_per_gpu(cfg, tp, "experts_int8").values()) + HEADROOM
        need += (max_prompt + 64) * ModelCache.bytes_per_token(local, torch.bfloat16)
        need += max_batch * ModelCache.bytes_per_slot(local)
        if need < free:
            return layers
    raise MemoryError("not even one full-width layer fits this GPU")


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


def run_prefill(runner, cache, length: int, chunk: int, verbose: bool) -> float:
    """Seconds for a `length`-token prompt in `chunk`-token steps (long prompts: one timed run, no warm-up)."""
    blocks = list(range(cache.num_blocks))
    long = length > 200_000

    def go():
        t0 = time.perf_counter()
        for start in range(0, length, chunk):
            n = min(chunk, length - start)
            runner.run([StepItem([7] * n, start, 0, blocks)])
            if long and verbose and (start // chunk) % 16 == 15:
                sync()
                print(f"  prefill {start + n}/{length} tokens, {time.perf_counter() - t0:.1f} s", flush=True)
    if not long:
        runner.run([StepItem([7] * min(chunk, length), 0, 0, blocks)])  # warm-up: kernels compiled at this size
    return timed(go, 1 if long else 2, warmup=False)


def run_decode(runner, cache, batch: int, context: int, steps: int) -> float:
    per = -(-(context + steps + 2) // BLOCK)
    tables = [list(range(b * per, (b + 1) * per)) for b in range(batch)]
    runner.run([StepItem([11] * context, 0, b, tables[b]) for b in range(batch)])
    pos = [context]

    def step():
        runner.run([StepItem([13], pos[0], b, tables[b]) for b in range(batch)])
        pos[0] += 1
    step()
    return timed(step, steps)


def main_rank(rank: int, size: int, init_method: str | None, a) -> None:
    global DEV
    DEV = "cpu" if a.smoke else "cuda"
    tp = init_group(rank, size, init_method, DEV) if size > 1 else TPGroup()
    layers = a.layers if a.layers != "auto" else fit_layers(size, max(a.prompts), max(a.batches))
    layers = int(layers)
    cfg = m1_config(layers, a.smoke)
    model = MiniMaxM1(cfg, torch.bfloat16, DEV, tp, "experts_int8")
    randomize(model)
    local = local_config(cfg, tp)
    need_rows = max(max(a.prompts), max(a.batches) * (a.context + a.steps + 2 + BLOCK))
    cache = ModelCache(local, max(a.batches), -(-need_rows // BLOCK) + max(a.batches), BLOCK, torch.bfloat16, DEV)
    runner = ModelRunner(model, cache, DEV)
    copy_bw, peak = copy_ceiling(), bf16_peak()
    run_decode(runner, cache, 1, a.context, 3)  # warm-up: the first decode measured in a process ran ~6x slow
    rows = []
    for batch in a.batches:
        t = timed_safe(lambda: run_decode(runner, cache, batch, a.context, a.steps))
        floor = decode_bytes(cfg, size, batch) / copy_bw
        rows.append({"test": f"decode b={batch}", "ms_per_step": t and t * 1e3, "tok_s": t and batch / t,
                     "floor_ms": floor * 1e3, "floor_fraction": t and floor / t,
                     "est_80_layers_tok_s": t and batch / (t * 80 / layers)})
    for length in a.prompts:
        t = timed_safe(lambda: run_prefill(runner, cache, length, a.chunk, rank == 0))
        rows.append({"test": f"prefill {length}", "seconds": t, "tok_s": t and length / t})
    device = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (smoke)"
    result = {"device": device, "gpus": size, "layers": layers, "torch": torch.__version__,
              "copy_TBps": copy_bw / 1e12, "bf16_TFLOPs": peak / 1e12, "allreduce_us": bench_allreduce(size),
              "allreduces_per_token": 1 + 2 * layers, "rows": rows,
              "moe": bench_moe(model, copy_bw, peak, (1, 8) if a.smoke else (1, 8, 64, 8192))}
    if rank == 0:
        report(result, a.out)
    if size > 1:
        dist.destroy_process_group()


def timed_safe(fn):
    """fn()'s seconds, or None when the GPU runs out of memory (reported, the run goes on)."""
    try:
        return fn()
    except torch.OutOfMemoryError as e:
        print("out of memory:", str(e).splitlines()[0])
        torch.cuda.empty_cache()
        return None


def report(result: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"scale_tp{result['gpus']}_L{result['layers']}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\n{result['device']} x{result['gpus']}, {result['layers']} full-width layers, int8 experts; copy "
          f"{result['copy_TBps']:.2f} TB/s, bf16 {result['bf16_TFLOPs']:.0f} TFLOP/s, all-reduce "
          f"{result['allreduce_us'] or 0:.1f} us x {result['allreduces_per_token']}/token  ->  {path}")
    fmt = lambda v, f: "-" if v is None else format(v, f)
    print(f"{'test':<18}{'ms/step|s':>11}{'tok/s':>11}{'floor ms':>10}{'of floor':>10}{'80L tok/s':>11}")
    for r in result["rows"]:
        first = r.get("ms_per_step", r.get("seconds"))
        print(f"{r['test']:<18}{fmt(first, '.3f'):>11}{fmt(r['tok_s'], '.1f'):>11}{fmt(r.get('floor_ms'), '.3f'):>10}"
              f"{fmt(r.get('floor_fraction'), '.0%'):>10}{fmt(r.get('est_80_layers_tok_s'), '.1f'):>11}")
    for k, v in result["moe"].items():
        print(f"{k:<22}" + (f"{v:.3f} ms" if isinstance(v, float) else
                            f"{v['ms']:.3f} ms, {v['expert_GBps']:.0f} GB/s ({v['copy_fraction']:.0%} of copy), "
                            f"{v['TFLOPs']:.1f} TFLOP/s ({v['bf16_peak_fraction']:.0%} of bf16)"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tp", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    ap.add_argument("--layers", default="auto", help="number of full-width layers, or auto (as many as fit)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--prompts", type=int, nargs="+", default=[8192, 131072])
    ap.add_argument("--chunk", type=int, default=8192, help="prefill chunk (the engine's prefill_chunk_size)")
    ap.add_argument("--context", type=int, default=256, help="tokens of context before the decode steps")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="toy width on CPU (gloo), to check the script itself")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(os.path.dirname(__file__), "results"))
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if "RANK" in os.environ:  # torchrun
        main_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", args)
    elif args.tp > 1:
        import torch.multiprocessing as mp
        mp.spawn(main_rank, args=(args.tp, f"tcp://127.0.0.1:{free_port()}", args), nprocs=args.tp)
    else:
        main_rank(0, 1, None, args)
