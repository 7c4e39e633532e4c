"""Load test of M1 Studio over loopback: concurrent streams + prompts that overflow the KV pool + one bad-sampling
request, while /health is polled. Pass: every good stream completes ([DONE] after a finish_reason, no error), the
bad request gets a 400, /health answers 200 throughout (and quickly: it never waits on the engine thread).

    python bench/load.py                         # starts app.py (tiny model, CPU): 64 streams, 4 overflow prompts
    python bench/load.py --streams 16 --json out.json
    python bench/load.py --base http://127.0.0.1:7860 --api-key KEY   # a server already running

tests/test_load.py runs a small version on every CI run.
"""
import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BAD_BODY = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN, "top_p": 1e-300}'


async def stream_one(http: httpx.AsyncClient, body: dict) -> dict:
    """One streamed completion: ok when a finish_reason and [DONE] arrive without an error object."""
    start, first, chunks, finish, error, done = time.perf_counter(), None, 0, None, None, False
    async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        if response.status_code != 200:
            return {"ok": False, "status": response.status_code, "error": (await response.aread()).decode()[:200]}
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                error = event["error"]["message"]
                continue
            for choice in event.get("choices", []):
                if choice["delta"].get("content"):
                    chunks += 1
                    first = first or time.perf_counter()
                finish = choice.get("finish_reason") or finish
    return {"ok": done and finish is not None and error is None, "status": 200, "chunks": chunks, "finish": finish,
            "error": error, "ttft_s": (first or time.perf_counter()) - start, "seconds": time.perf_counter() - start}


async def poll_health(http: httpx.AsyncClient, stop: asyncio.Event, interval: float = 0.2) -> list[tuple]:
    seen = []
    while not stop.is_set():
        start = time.perf_counter()
        try:
            status = (await http.get("/health", timeout=30)).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        seen.append((status, time.perf_counter() - start))
        await asyncio.sleep(interval)
    return seen


async def run_load(base: str, *, api_key: str = "none", streams: int = 64, overflow: int = 4,
                   overflow_words: int = 2500, max_tokens: int = 16, timeout: float = 600) -> dict:
    """Drive the load; return the figures (see `report`)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=streams + overflow + 8)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout, limits=limits) as http:
        stop = asyncio.Event()
        health = asyncio.create_task(poll_health(http, stop))
        start = time.perf_counter()
        good = [stream_one(http, {"messages": [{"role": "user", "content": f"Stream {i}: tell me a story."}],
                                  "max_tokens": max_tokens, "temperature": 0.8, "seed": i})
                for i in range(streams)]
        big = [stream_one(http, {"messages": [{"role": "user", "content": f"Doc {i}. " + "word " * overflow_words}],
                                 "max_tokens": max_tokens, "temperature": 0})
               for i in range(overflow)]
        bad = http.post("/v1/chat/completions", content=BAD_BODY, headers={"Content-Type": "application/json"})
        results = await asyncio.gather(*good, *big, bad)
        wall = time.perf_counter() - start
        stop.set()
        polls = await health
        final_health = (await http.get("/health")).json()
    return report(results[:streams], results[streams:-1], results[-1], polls, final_health, wall)


def report(good: list[dict], big: list[dict], bad: httpx.Response, polls: list[tuple], final: dict,
           wall: float) -> dict:
    ttfts = sorted(r["ttft_s"] for r in good + big if r["ok"])
    latencies = sorted(seconds for _, seconds in polls)
    return {
        "streams_ok": sum(r["ok"] for r in good), "streams": len(good),
        "overflow_ok": sum(r["ok"] for r in big), "overflow": len(big),
        "failures": [r for r in good + big if not r["ok"]][:5],
        "bad_status": bad.status_code, "bad_param": bad.json().get("error", {}).get("param"),
        "wall_s": round(wall, 2), "chunks": sum(r.get("chunks", 0) for r in good + big),
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_max_s": round(ttfts[-1], 3) if ttfts else None,
        "health_polls": len(polls), "health_non_200": sum(status != 200 for status, _ in polls),
        "health_p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "health_max_s": round(latencies[-1], 4) if latencies else None,
        "health_after": final.get("status"), "running_after": final.get("running_requests"),
        "preemptions": final.get("preemptions"),
    }


def passed(figures: dict) -> bool:
    return (figures["streams_ok"] == figures["streams"] and figures["overflow_ok"] == figures["overflow"]
            and figures["bad_status"] == 400 and figures["health_non_200"] == 0 and figures["health_after"] == "ok")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", help="a running server (default: start app.py with the tiny model on CPU)")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--overflow", type=int, default=4)
    ap.add_argument("--overflow-words", type=int, default=2500)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--kv-cache-tokens", type=int, default=8192, help="the started server's KV pool")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    kw = dict(streams=args.streams, overflow=args.overflow, overflow_words=args.overflow_words,
              max_tokens=args.max_tokens)
    if args.base:
        figures = asyncio.run(run_load(args.base, api_key=args.api_key, **kw))
    else:
        from tests.app_server import running_app
        from engine.model.tiny import write_checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            model = write_checkpoint(os.path.join(tmp, "tiny"), layout="official", seed=0)
            server = ["--model", str(model), "--device", "cpu", "--max-model-len", "8192",
                      "--kv-cache-tokens", str(args.kv_cache_tokens), "--rate-limit-api", ""]
            with running_app(server, tmp, timeout=900) as base:
                figures = asyncio.run(run_load(base, **kw))
    print(json.dumps(figures, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0 if passed(figures) else 1


if __name__ == "__main__":
    sys.exit(main())
