"""`python app.py` on a loopback port with the tiny model, driven by the real `openai` client: streaming and not,
reasoning/answer split, usage and cached tokens, stop strings, seeds, error shapes, keys, disconnect → abort."""
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

import app
from tests.app_server import running_app
from engine.text.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key"
MODEL = "m1-tiny"
WINDOW = 4096
HELLO = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello there!"}]


@pytest.fixture(scope="module")
def server(tiny_official, tmp_path_factory):
    with running_app(["--model", str(tiny_official), "--served-model-name", MODEL, "--api-key", KEY,
                      "--max-model-len", str(WINDOW), "--device", "cpu"], tmp_path_factory.mktemp("data")) as base:
        yield base


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(tiny_official):
    return load_tokenizer(tiny_official)


def stream_parts(client, **kw):
    chunks = list(client.chat.completions.create(model=MODEL, stream=True, **kw))
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, reasoning, content


def test_health_models_and_the_placeholder_page_say_random_weights(server, client):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["random_weights"] is True and health["max_model_len"] == WINDOW
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert "RANDOM weights" in httpx.get(server).text


def test_non_streaming_usage_matches_the_chat_encoding(client, tokenizer):
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=3)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("length", "stop") and isinstance(choice.message.content, str)
    assert reply.usage.prompt_tokens == len(tokenizer.encode_chat(HELLO))
    assert 1 <= reply.usage.completion_tokens <= 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_equals_non_streaming_with_the_same_seed_and_sends_usage_last(client):
    kw = dict(messages=HELLO, max_tokens=12, seed=7, temperature=0.8)
    whole = client.chat.completions.create(model=MODEL, **kw)
    chunks, reasoning, content = stream_parts(client, stream_options={"include_usage": True}, **kw)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices == []
    assert content == whole.choices[0].message.content and reasoning == ""
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.usage is None for c in chunks[:-1])


def test_reasoning_and_answer_split_with_a_thinking_budget(client):
    kw = dict(messages=HELLO, max_tokens=24, seed=1, extra_body={"force_think_start": True, "thinking_budget": 5})
    chunks, reasoning, content = stream_parts(client, stream_options={"include_usage": True}, **kw)
    usage = chunks[-1].usage
    assert reasoning and content and "</think>" not in reasoning + content
    assert usage.completion_tokens_details.reasoning_tokens == 5, usage  # the engine closes at the budget
    whole = client.chat.completions.create(model=MODEL, **kw)
    message = whole.choices[0].message
    assert message.reasoning_content and message.content and "</think>" not in message.content
    assert message.reasoning_content == reasoning and message.content == content  # same seed, same reply
    assert whole.usage.completion_tokens_details.reasoning_tokens == 5


def test_a_reply_cut_inside_the_think_block_is_all_reasoning(client):
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=6, seed=2,
                                           extra_body={"force_think_start": True})
    details = reply.usage.completion_tokens_details
    assert reply.choices[0].finish_reason == "length" and reply.choices[0].message.content == ""
    assert reply.choices[0].message.reasoning_content and details.reasoning_tokens == reply.usage.completion_tokens


def test_a_follow_up_request_reuses_the_engine_state(client, tokenizer):
    first = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=4)
    follow = HELLO + [{"role": "assistant", "content": first.choices[0].message.content},
                      {"role": "user", "content": "Tell me more."}]
    second = client.chat.completions.create(model=MODEL, messages=follow, max_tokens=8, seed=4)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert second.usage.prompt_tokens == len(tokenizer.encode_chat(follow))
    assert first.usage.prompt_tokens - 1 <= cached < second.usage.prompt_tokens


def test_stop_strings_cut_the_reply_where_the_string_starts(client):
    kw = dict(messages=[{"role": "user", "content": "Count."}], max_tokens=30, seed=11)
    full = client.chat.completions.create(model=MODEL, **kw).choices[0].message.content
    stop = full[6:9]
    cut = client.chat.completions.create(model=MODEL, stop=[stop, "never-there"], **kw)
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == full[:full.find(stop)]
    _, _, streamed = stream_parts(client, stop=stop, **kw)
    assert streamed == full[:full.find(stop)]


def test_errors_have_openai_shape_and_status(server, client):
    cases = [(openai.BadRequestError, dict(temperature=3), "temperature", None),
             (openai.BadRequestError, dict(max_tokens=0), "max_tokens", None),
             (openai.NotFoundError, dict(model="gpt-9"), "model", "model_not_found"),
             (openai.BadRequestError, dict(messages=[{"role": "user", "content": "word " * 5000}]), "messages",
              "context_length_exceeded")]
    for error, kw, param, code in cases:
        with pytest.raises(error) as info:
            client.chat.completions.create(**{"model": MODEL, "messages": HELLO, "max_tokens": 4, **kw})
        assert info.value.body["param"] == param and info.value.body["code"] == code, info.value.body
    overflow = info.value.body["message"]
    assert "over by" in overflow and f"{WINDOW:,}" in overflow
    bad = httpx.post(f"{server}/v1/chat/completions", content=b"{not json",
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}


def test_api_keys_are_required(server):
    missing = httpx.get(f"{server}/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
    assert httpx.get(f"{server}/health").status_code == 200  # health stays open


def running(server) -> int:
    return httpx.get(f"{server}/health").json()["running_requests"]


def test_a_disconnected_stream_aborts_its_engine_request(server):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 3000, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{server}/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEY}"}) as response:
            lines = response.iter_lines()  # kept referenced: dropping it would close the connection
            while not (line := next(lines)).startswith("data: ") or "content\":\"\"" in line:
                pass
            assert running(server) == 1
    deadline = time.time() + 10
    while running(server) != 0:
        assert time.time() < deadline, "the engine still runs the request of a closed stream"
        time.sleep(0.1)


def test_a_client_that_gives_up_on_a_non_streamed_reply_aborts_it(server):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 3000, "ignore_eos": True}  # no early EOS: 3000 tokens
    with pytest.raises(httpx.ReadTimeout):
        reply = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                           timeout=1.5)
        print(f"a 3000-token reply came back within 1.5 s: {reply.status_code} {reply.text[:600]}")
    deadline = time.time() + 10
    while running(server) != 0:
        assert time.time() < deadline, "the engine still runs the request of a client that left"
        time.sleep(0.1)


def test_first_run_writes_the_tiny_model_and_bad_engine_flags_fail_clearly(tmp_path, tiny_official):
    target = tmp_path / "models" / "m1-tiny"
    app.ensure_tiny_model(target)
    assert (target / "config.json").is_file() and not list(target.parent.glob(".m1-tiny-*"))
    done = subprocess.run([sys.executable, "app.py", "--model", str(tiny_official), "--quantization", "fp3",
                           "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "error: ValueError: quantization='fp3' is not supported" in done.stderr
    helped = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--max-model-len" in helped.stdout
