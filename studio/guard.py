"""`RequestGuard`: an ASGI middleware in front of every route (the API, /health, the share pages, the mounted studio).

- Body size: a Content-Length over the route's limit is refused with 413 before anything is read; a body sent
  without one is counted as it arrives and cut at the limit (the app sees a disconnect, the client gets 413).
  Uploads (Gradio's `/upload`) get `max_upload_bytes`; every other route `max_body_bytes`.
- Content type: POST bodies on /v1 must be JSON (415 otherwise): a web page cannot send one cross-site without a
  CORS preflight, so `fetch(..., {mode: "no-cors"})` with a text/plain body no longer reaches the engine.
- Rate limits, in memory (moving windows of the `limits` library), per client IP and per user: /v1 per IP and per
  API key, login per IP and per user name, share pages per IP. Over a limit: 429 with Retry-After.
Errors on /v1 are in OpenAI's shape; elsewhere {"detail": ...}.
"""
import hashlib
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

LOGIN_BODY_BYTES = 64 << 10


@dataclass
class GuardConfig:
    """Limits (rates in the `limits` notation, e.g. "10/minute"; "" turns one off)."""
    max_body_bytes: int = 8 << 20
    max_upload_bytes: int = 100 << 20
    api_rate: str = "600/minute"
    login_rate: str = "10/minute"
    share_rate: str = "60/minute"


class RequestGuard:
    def __init__(self, app, config: GuardConfig | None = None):
        self.app, self.config = app, config or GuardConfig()
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        c = self.config
        self.rates = {name: parse_rate(rate) for name, rate in
                      (("api", c.api_rate), ("login", c.login_rate), ("share", c.share_rate)) if rate}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = _route_path(scope), scope["method"]
        api = path == "/v1" or path.startswith("/v1/")
        refusal = self._refuse_early(scope, path, method, api)
        if refusal is None and path.rstrip("/") == "/login" and method == "POST":
            body, receive = await _buffered(receive, LOGIN_BODY_BYTES)
            if body is None:
                refusal = 413, "the login form is too large", "request_too_large", None
            else:
                user = (parse_qs(body.decode("utf-8", "replace")).get("username") or [""])[0]
                refusal = self._over_limit("login", [_client(scope), "user:" + user])
        if refusal is not None:
            return await _respond(send, api, *refusal)
        limit = self.config.max_upload_bytes if path.endswith("/upload") else self.config.max_body_bytes
        await self._call_counted(scope, receive, send, limit, api)

    def _refuse_early(self, scope, path: str, method: str, api: bool):
        """(status, message, code, retry_after) for a request refused from its headers alone, else None."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if api:
            refusal = self._over_limit("api", [_client(scope), _key_id(headers.get("authorization", ""))])
            if refusal:
                return refusal
            if method in ("POST", "PUT", "PATCH") and not _is_json(headers.get("content-type", "")):
                return 415, "the request body must be JSON (Content-Type: application/json)", \
                    "unsupported_media_type", None
        elif path.startswith("/share/"):
            refusal = self._over_limit("share", [_client(scope)])
            if refusal:
                return refusal
        limit = self.config.max_upload_bytes if path.endswith("/upload") else self.config.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return _too_large(limit)
        return None

    def _over_limit(self, rule: str, keys: list[str | None]):
        """Count one hit of `rule` for each key (IP, user); the refusal if any is over its limit."""
        rate = self.rates.get(rule)
        for key in (k for k in keys if k):
            if rate is not None and not self.limiter.hit(rate, rule, key):
                reset = self.limiter.get_window_stats(rate, rule, key).reset_time
                retry = max(1, int(reset - time.time()) + 1)
                return 429, f"too many requests: the limit is {rate} per client and per user; retry in {retry} s", \
                    "rate_limit_exceeded", retry
        return None

    async def _call_counted(self, scope, receive, send, limit: int, api: bool):
        """Run the app with the body counted; over `limit`, the app sees a disconnect and the client a 413."""
        state = {"seen": 0, "over": False, "started": False}

        async def counted_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"]:
                return  # the 413 below replaces whatever the app answers
            state["started"] = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if state["over"] and not state["started"]:
            await _respond(send, api, *_too_large(limit))


def _too_large(limit: int):
    return 413, f"the request body is larger than the limit of {limit / 2**20:g} MB", "request_too_large", None


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _client(scope) -> str | None:
    client = scope.get("client")
    return f"ip:{client[0]}" if client else None


def _key_id(authorization: str) -> str | None:
    """A stable id for the caller's API key (hashed: keys never sit in the limiter's memory)."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return "key:" + hashlib.sha256(key.strip().encode()).hexdigest()[:16]


def _is_json(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _buffered(receive, limit: int):
    """Read the whole body (None if over `limit`) and a receive that replays it."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
        if size > limit:
            return None, receive
    body, sent = b"".join(chunks), [False]

    async def replay():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return body, replay


async def _respond(send, api: bool, status: int, message: str, code: str, retry_after: int | None):
    if api:
        kind = "requests" if status == 429 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    else:
        body = {"detail": message}
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
