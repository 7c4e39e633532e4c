"""Bind Gradio's page session hash to the login that first used it (ASGI middleware in front of the studio).

Gradio keys a page's queue (queue/data: its live stream), its gr.State values, cancel and heartbeat by a
`session_hash` the browser makes up, and does not check it against the login: with another user's hash, a logged-in
user read that user's live reply. The guard takes the hash from wherever Gradio reads it (the `session_hash` query
parameter, the JSON body of POST routes, the path of /heartbeat/ and /stream/), and answers 403 when the hash
belongs to another login, 401 when there is no login. Error bodies never echo the hash.

    app.add_middleware(SessionHashGuard, user_of=gradio_user_lookup(gradio_app))
"""
import json
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

API = "/gradio_api/"
PATH_HASH_ROUTES = ("heartbeat/", "stream/")  # /gradio_api/heartbeat/{hash}, /gradio_api/stream/{hash}/...
MAX_JSON_BODY = 64 * 1024 * 1024  # larger JSON bodies pass unread (body limits are the API layer's business)
MAX_BOUND_HASHES = 200_000  # oldest bindings forgotten first (a forgotten hash is bound again on its next use)
OTHER_LOGIN = "this page belongs to another login: reload the page"
NO_LOGIN = "not signed in: reload the page and sign in"


def gradio_user_lookup(gradio_app) -> Callable[[dict], str | None]:
    """user_of(scope) for a mounted Gradio App: the login of its access-token cookie, as Gradio resolves it."""
    def user_of(scope) -> str | None:
        cookie = SimpleCookie()
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookie.load(value.decode("latin-1"))
        token = next((cookie[key].value for key in (f"access-token-{gradio_app.cookie_id}",
                                                    f"access-token-unsecure-{gradio_app.cookie_id}")
                      if key in cookie), None)
        return gradio_app.tokens.get(token) if token else None
    return user_of


class SessionHashGuard:
    """ASGI middleware: a session hash is usable only by the login that first used it."""

    def __init__(self, app, user_of: Callable[[dict], str | None], max_hashes: int = MAX_BOUND_HASHES):
        self.app, self.user_of, self.max_hashes = app, user_of, max_hashes
        self.owners: OrderedDict[str, str] = OrderedDict()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or API not in scope["path"]:
            return await self.app(scope, receive, send)
        session_hash = _from_query(scope) or _from_path(scope["path"])
        if session_hash is None and scope["method"] == "POST" and _is_json(scope):
            body = await _read_body(receive)
            if body is None:
                return await _refuse(send, 413, "request body too large")
            session_hash, receive = _from_json(body), _replay(body, receive)
        if session_hash is not None:
            refusal = self.check(session_hash, self.user_of(scope))
            if refusal is not None:
                return await _refuse(send, *refusal)
        return await self.app(scope, receive, send)

    def check(self, session_hash: str, user: str | None) -> tuple[int, str] | None:
        """None when `user` may use the hash (binding it on first use), else (HTTP status, message)."""
        if user is None:
            return 401, NO_LOGIN
        owner = self.owners.get(session_hash)
        if owner is None:
            self.owners[session_hash] = user
            while len(self.owners) > self.max_hashes:
                self.owners.popitem(last=False)
            return None
        self.owners.move_to_end(session_hash)
        return None if owner == user else (403, OTHER_LOGIN)


def _from_query(scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
    return values[0] if values else None


def _from_path(path: str) -> str | None:
    tail = path.split(API, 1)[1]
    for route in PATH_HASH_ROUTES:
        if tail.startswith(route) and tail[len(route):]:
            candidate = tail[len(route):].split("/", 1)[0]
            return candidate if route == "heartbeat/" or tail.count("/") >= 3 else None
    return None


def _is_json(scope) -> bool:
    content_type = dict(scope.get("headers", ())).get(b"content-type", b"")
    return content_type.split(b";")[0].strip().lower() == b"application/json"


async def _read_body(receive) -> bytes | None:
    """The whole request body; None when it is over MAX_JSON_BODY. A disconnect ends it early (empty rest)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > MAX_JSON_BODY:
            return None
        if not message.get("more_body"):
            return b"".join(chunks)


def _from_json(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    session_hash = value.get("session_hash") if isinstance(value, dict) else None
    return session_hash if isinstance(session_hash, str) else None


def _replay(body: bytes, receive):
    """A receive that hands the buffered body over once, then the client's own messages (its disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
