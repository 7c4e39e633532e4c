"""`python app.py --backend ...`: the seed's transformers path serves the same API (without state reuse); a backend
that is not installed is refused with the pip command."""
import subprocess
import sys

import openai

from tests.app_server import ROOT, running_app


def test_transformers_backend_serves_the_api_without_state_reuse(tiny_hf, tmp_path):
    args = ["--model", str(tiny_hf), "--backend", "transformers", "--max-model-len", "4096", "--device", "cpu"]
    with running_app(args, tmp_path) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        msgs = [{"role": "user", "content": "Hello there"}]
        first = client.chat.completions.create(model=model, messages=msgs, max_tokens=6, temperature=0)
        assert first.usage.completion_tokens == 6
        follow = msgs + [{"role": "assistant", "content": first.choices[0].message.content or "ok"},
                         {"role": "user", "content": "And then?"}]
        chunks = list(client.chat.completions.create(model=model, messages=follow, max_tokens=4, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        usage = chunks[-1].usage
        assert usage.completion_tokens == 4 and usage.prompt_tokens_details.cached_tokens in (0, None)
        assert "backend loaded (no state reuse" in (tmp_path / "server.log").read_text()


def test_missing_backend_is_refused_with_the_pip_command(tiny_official, tmp_path):
    done = subprocess.run([sys.executable, "app.py", "--model", str(tiny_official), "--backend", "vllm",
                           "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not installed: pip install" in done.stderr and "vllm" in done.stderr
