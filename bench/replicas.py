"""What Ray Serve replicas cost and what session affinity saves (issue 15), on two CPU replicas of the tiny model.

    python bench/replicas.py [--out bench/results/replicas_cpu.json] [--repeats 9]

Measured against the in-process AsyncEngine on the same checkpoint, one torch thread everywhere:
- added latency per request: a 1-token reply to a short prompt, end to end (median, Ray minus in-process);
- added latency per streamed token: inter-token time of a 64-token reply (median over requests of the mean gap);
- follow-up TTFT of a conversation whose history is ~1,500 tokens: on its own replica (affinity: state restored from
  memory), moved to the other replica with the shared --state-dir (restored from disk), and moved without saved
  state (the history re-read: what a router without affinity costs on the turns it sends elsewhere).
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cluster.launch import start_replicas  # noqa: E402
from engine.cluster.router import rank_replicas  # noqa: E402
from engine.model.tiny import write_checkpoint  # noqa: E402
from engine.serving.async_engine import AsyncEngine  # noqa: E402
from engine.serving.llm_engine import EngineArgs, LLMEngine  # noqa: E402
from engine.serving.sampling import SamplingParams  # noqa: E402

ENGINE = {"device": "cpu", "dtype": "float32"}


async def timed(engine, ids, params, **kw) -> dict:
    """One request: ttft, total seconds, token arrival times, final stats."""
    start, arrivals, final = time.perf_counter(), [], None
    async for update in engine.stream(ids, params, **kw):
        if update.token_ids:
            arrivals.append(time.perf_counter() - start)
        final = update if update.finished else final
    assert final is not None and final.error is None and arrivals, final
    return {"ttft": arrivals[0], "total": time.perf_counter() - start, "arrivals": arrivals, "stats": final.stats}


def run(coro):
    return asyncio.run(coro)


def request_latency(engine, repeats: int, **kw) -> float:
    ids = list(range(10, 60))
    times = [run(timed(engine, ids, SamplingParams(max_tokens=1, seed=i), **kw))["total"] for i in range(repeats)]
    return statistics.median(times)


def token_gap(engine, repeats: int, **kw) -> float:
    ids, gaps = list(range(10, 60)), []
    for i in range(repeats):
        r = run(timed(engine, ids, SamplingParams(max_tokens=64, seed=i, ignore_eos=True), **kw))
        gaps.append((r["arrivals"][-1] - r["arrivals"][0]) / (len(r["arrivals"]) - 1))
    return statistics.median(gaps)


def follow_ups(engine, repeats: int, state_dir: Path) -> dict:
    """TTFT of turn 2 of fresh conversations: same replica, moved with disk state, moved without."""
    live = engine.live_replicas()
    out = {"affinity": [], "moved_shared_state_dir": [], "moved_reread": []}
    for i in range(repeats):
        session = f"bench-{i}"
        home = rank_replicas(session, live)[0]
        other_id = next(f"{session}-x{k}" for k in range(999) if rank_replicas(f"{session}-x{k}", live)[0] != home)
        for c, case in enumerate(out):
            history = [1000 + 3 * i + c] + list(range(20, 1520))  # a new conversation (its first token differs)
            follow = history + list(range(30, 50))
            r0 = run(timed(engine, history, SamplingParams(max_tokens=4, seed=i), session_id=session))
            assert r0["stats"]["replica"] == home
            if case == "moved_reread":
                for path in state_dir.iterdir():
                    path.unlink()
            sid = session if case == "affinity" else other_id
            r = run(timed(engine, follow, SamplingParams(max_tokens=4, seed=i), session_id=sid))
            out[case].append({"ttft": r["ttft"], "cached": r["stats"]["cached_tokens"],
                              "prompt": r["stats"]["prompt_tokens"], "replica_moved": r["stats"]["replica"] != home})
    return {case: {"ttft_median_s": statistics.median(x["ttft"] for x in rows), "runs": rows}
            for case, rows in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "replicas_cpu.json"))
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="m1-bench-replicas-"))
    model = str(write_checkpoint(tmp / "m1-tiny", layout="official", seed=0))
    state_dir = tmp / "states"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cluster = start_replicas(model, replicas=2, cpus_per_replica=0.5, torch_threads=1, engine=ENGINE,
                             engine_args={"max_model_len": 4096, "shared_state_dir": str(state_dir)})
    startup = time.perf_counter() - t0
    local = AsyncEngine(LLMEngine(model, **ENGINE, args=EngineArgs(max_model_len=4096)))
    try:
        for engine in (local, cluster):  # warm up both paths
            request_latency(engine, 2)
        req_local, req_ray = request_latency(local, args.repeats), request_latency(cluster, args.repeats)
        tok_local, tok_ray = token_gap(local, args.repeats), token_gap(cluster, args.repeats)
        follow = follow_ups(cluster, max(3, args.repeats // 2), state_dir)
    finally:
        local.shutdown()
        cluster.shutdown()
    result = {
        "bench": "replicas", "device": "cpu (2 CPU replicas of the tiny model, 1 torch thread each)",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_avg_before": load_before,
        "torch": torch.__version__, "ray": __import__("ray").__version__, "startup_s": startup,
        "request_latency_s": {"in_process": req_local, "ray": req_ray, "added": req_ray - req_local},
        "per_token_s": {"in_process": tok_local, "ray": tok_ray, "added": tok_ray - tok_local},
        "follow_up_ttft": follow,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k != "follow_up_ttft"}
    summary["follow_up_ttft_median_s"] = {k: v["ttft_median_s"] for k, v in follow.items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
