"""`python app.py --tensor-parallel-size 2` on CPU (gloo ranks): the API and the studio page answer (the engine's
TP=2 == TP=1 equality is tests/test_tp.py's)."""
import httpx
import openai

from tests.app_server import running_app

HELLO = [{"role": "user", "content": "Hello there!"}]


def test_a_two_rank_app_serves_the_api_and_the_studio(tiny_official, tmp_path):
    args = ["--model", str(tiny_official), "--served-model-name", "m1-tiny", "--device", "cpu",
            "--max-model-len", "2048", "--tensor-parallel-size", "2"]
    with running_app(args, tmp_path) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="m1-tiny", messages=HELLO, max_tokens=8, temperature=0)
        assert reply.usage.completion_tokens >= 1 and reply.choices[0].finish_reason in ("stop", "length")
        again = client.chat.completions.create(model="m1-tiny", messages=HELLO, max_tokens=8, temperature=0)
        assert again.choices[0].message.content == reply.choices[0].message.content  # greedy, over two ranks
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        assert "M1 Studio" in httpx.get(base, timeout=30).text
