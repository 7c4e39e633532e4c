"""`python app.py` on loopback as a stranger would meet it: big and odd bodies, cross-site requests, unknown URLs,
rate limits, hostile sampling values, a mid-stream engine error (issues 17 and 18; /health under load: test_load.py).

One server (tiny model, an API key, a login, 1 MB bodies, a 1,024-token KV pool for the mid-stream error); the
rate-limit tests spread their clients over X-Forwarded-For addresses (uvicorn trusts it from loopback), so each
test's budget is its own.
"""
import json
import threading
import time

import httpx
import openai
import pytest

from tests.app_server import running_app

KEY = "test-key"
MODEL = "m1-tiny"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "Hello there!"}]
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def server(tiny_official, tmp_path_factory):
    args = ["--model", str(tiny_official), "--served-model-name", MODEL, "--api-key", KEY, "--auth", "alice:pw",
            "--max-model-len", "4096", "--kv-cache-tokens", "1024", "--device", "cpu", "--max-body-mb", "1",
            "--max-upload-mb", "1", "--rate-limit-api", "100/minute", "--rate-limit-login", "3/minute", "--rate-limit-share", "5/minute"]
    with running_app(args, tmp_path_factory.mktemp("data")) as base:
        yield base


def post(server, body, *, ip="10.0.0.1", headers=None, **kw):
    raw = body if not isinstance(body, dict) else json.dumps(body).encode()
    head = {**AUTH, "Content-Type": "application/json", "X-Forwarded-For": ip, **(headers or {})}
    return httpx.post(f"{server}/v1/chat/completions", content=raw, headers=head, timeout=60, **kw)


def is_openai_error(response, status, code=None):
    error = response.json().get("error", {})
    return response.status_code == status and set(error) == ERROR_KEYS and (code is None or error["code"] == code)


def test_big_bodies_are_refused_before_they_are_read(server):
    big = b'{"messages": [{"role": "user", "content": "' + b"x" * (1200 << 10) + b'"}]}'
    start = time.perf_counter()
    assert is_openai_error(post(server, big, ip="10.0.1.1"), 413, "request_too_large")

    def chunked():  # no Content-Length: counted as it arrives
        for _ in range(12):
            yield b"x" * (100 << 10)
    assert is_openai_error(post(server, chunked(), ip="10.0.1.2"), 413, "request_too_large")
    assert time.perf_counter() - start < 10


def test_uploads_over_max_upload_mb_are_refused_with_the_message(server):
    login = httpx.post(f"{server}/login", data={"username": "alice", "password": "pw"},
                       headers={"X-Forwarded-For": "10.0.1.3"})
    assert login.status_code == 200, login.text
    cookie = "; ".join(f"{k}={v}" for k, v in login.cookies.items())  # Secure cookies: httpx keeps them off http

    def upload(size):
        return httpx.post(f"{server}/gradio_api/upload", headers={"Cookie": cookie},
                          files={"files": ("big.txt", b"x" * size, "text/plain")}, timeout=30)
    assert upload(10_000).status_code == 200
    over = upload(1536 << 10)  # over --max-upload-mb 1: Gradio's own check, with its message
    assert over.status_code == 413 and "maximum allowed size" in over.text, over.text
    assert upload(2200 << 10).status_code == 413  # over the guard's limit (1 MB + 1 MB of form slack)


def test_tokenising_a_large_body_does_not_stall_other_requests(server):
    body = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "word " * 180_000}]}
    done = {}
    worker = threading.Thread(target=lambda: done.update(r=post(server, body, ip="10.0.2.1")))
    worker.start()
    latencies = []
    while worker.is_alive() and len(latencies) < 50:
        start = time.perf_counter()
        assert httpx.get(f"{server}/health", timeout=10).status_code == 200
        latencies.append(time.perf_counter() - start)
    worker.join()
    assert is_openai_error(done["r"], 400, "context_length_exceeded")  # 180k words: tokenised, then refused
    assert max(latencies) < 2.0, latencies  # on the event loop this body stalled everyone for seconds


def test_only_json_bodies_reach_the_api(server):
    """A page's fetch(..., {mode: "no-cors"}) can only send text/plain, form or multipart bodies: all are 415."""
    body = json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 1}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        response = post(server, body, ip="10.0.3.1", headers={"Content-Type": kind})
        assert is_openai_error(response, 415, "unsupported_media_type"), (kind, response.text)
    assert post(server, body, ip="10.0.3.1", headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


def test_cors_is_closed_by_default(server):
    evil = {"Origin": "https://evil.example", "X-Forwarded-For": "10.0.4.1"}
    preflight = httpx.options(f"{server}/v1/chat/completions", headers={
        **evil, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert "access-control-allow-origin" not in preflight.headers
    models = httpx.get(f"{server}/v1/models", headers={**evil, **AUTH})
    assert models.status_code == 200 and "access-control-allow-origin" not in models.headers


def test_docs_and_schema_need_the_key(server):
    for path in ("/v1/docs", "/v1/openapi.json"):
        assert is_openai_error(httpx.get(f"{server}{path}", headers={"X-Forwarded-For": "10.0.5.1"}), 401)
        assert httpx.get(f"{server}{path}", headers={**AUTH, "X-Forwarded-For": "10.0.5.1"}).status_code == 200
    schema = httpx.get(f"{server}/v1/openapi.json", headers={**AUTH, "X-Forwarded-For": "10.0.5.1"}).json()
    assert "/v1/chat/completions" in schema["paths"]
    assert "/v1/chat/completions" not in httpx.get(f"{server}/openapi.json").text  # no open copy elsewhere


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/v1", 404), ("GET", "/v1/", 404), ("POST", "/v1/completions", 404), ("POST", "/v1/embeddings", 404),
    ("GET", "/v1/files", 404), ("GET", "/v1/chat", 404), ("GET", "/v1/models/gpt-9", 404),
    ("GET", "/v1/chat/completions", 405), ("DELETE", "/v1/models", 405), ("PUT", "/v1/models/m1-tiny", 405)])
def test_unknown_urls_and_methods_answer_in_openai_shape(server, method, path, status):
    headers = {**AUTH, "X-Forwarded-For": "10.0.6.1", "Content-Type": "application/json"}
    response = httpx.request(method, f"{server}{path}", headers=headers, content=b"{}" if method != "GET" else None)
    assert is_openai_error(response, status), response.text


def test_get_model_by_id(server):
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0,
                           default_headers={"X-Forwarded-For": "10.0.6.2"})
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-9")
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("raw, param", [
    (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),  # RecursionError in the parser
    (json.dumps({"messages": HELLO, "seed": 2 ** 70}).encode(), "seed"),
    (json.dumps({"messages": HELLO, "seed": -(2 ** 64)}).encode(), "seed"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', "temperature"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}', "top_p"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}', "top_p"),
    (json.dumps({"messages": HELLO, "n": 2}).encode(), "n"),
])
def test_hostile_values_are_400s(server, raw, param):
    response = post(server, raw, ip="10.0.7.1")
    assert is_openai_error(response, 400) and response.json()["error"]["param"] == param, response.text


def test_vanishing_temperature_and_top_p_are_served(server):
    greedy = post(server, {"messages": HELLO, "max_tokens": 6, "temperature": 0}, ip="10.0.8.1").json()
    for extreme in ({"temperature": 1e-45}, {"temperature": 1e-300}, {"top_p": 1e-300, "seed": 3}):
        reply = post(server, {"messages": HELLO, "max_tokens": 6, **extreme}, ip="10.0.8.1").json()
        assert reply["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"], extreme


def test_an_engine_error_mid_stream_arrives_as_an_error_chunk(server):
    """The prompt fits the 1,024-token KV pool, its reply does not: tokens stream, then the error object."""
    client = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0,
                           default_headers={"X-Forwarded-For": "10.0.9.1"})
    stream = client.chat.completions.create(model=MODEL, stream=True, max_tokens=600, temperature=0,
                                            messages=[{"role": "user", "content": "go " * 850}])
    content = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            content.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(content) and "KV cache" in str(info.value), info.value
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_login_attempts_are_limited_per_ip_and_per_user(server):
    def login(user, ip):
        return httpx.post(f"{server}/login", data={"username": user, "password": "wrong"},
                          headers={"X-Forwarded-For": ip}).status_code
    assert [login(f"user{i}", "10.1.0.1") for i in range(4)][-1] == 429  # one IP, many names
    assert [login("alice", f"10.1.1.{i}") for i in range(4)][-1] == 429  # one name, many IPs
    assert login("bob", "10.1.2.1") != 429


def test_share_guesses_and_api_calls_are_limited(server):
    codes = [httpx.get(f"{server}/share/guess{i}", headers={"X-Forwarded-For": "10.2.0.1"}).status_code
             for i in range(6)]
    assert codes[:5] == [404] * 5 and codes[5] == 429
    models = [httpx.get(f"{server}/v1/models", headers={**AUTH, "X-Forwarded-For": f"10.2.1.{i}"})
              for i in range(110)]  # one key over many IPs: the key's own limit (100/minute here) applies
    refused = [r for r in models if r.status_code == 429]
    assert refused and is_openai_error(refused[0], 429, "rate_limit_exceeded") and "retry-after" in refused[0].headers
