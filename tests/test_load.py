"""The load test (bench/load.py), small enough for CI: a real server on loopback with a 4,096-token KV pool,
16 concurrent streams, 4 prompts that each fit the pool but together overflow it, and one bad-sampling request.
Every good stream completes, the bad one gets a 400, /health stays 200 and answers fast throughout."""
import asyncio

from bench.load import passed, run_load
from tests.app_server import running_app


def test_streams_overflow_and_a_bad_request_under_load(tiny_official, tmp_path):
    args = ["--model", str(tiny_official), "--device", "cpu", "--max-model-len", "4096", "--kv-cache-tokens", "4096",
            "--rate-limit-api", ""]
    with running_app(args, tmp_path) as base:
        figures = asyncio.run(run_load(base, streams=16, overflow=4, overflow_words=1100, max_tokens=8, timeout=300))
    print(figures)
    assert passed(figures), figures
    assert figures["bad_param"] in ("temperature", "top_p") and figures["running_after"] == 0
    assert figures["health_polls"] > 3 and figures["health_max_s"] < 5.0, figures  # 2-core CI: GIL-bound
