"""A raw HTTP client of the studio's Gradio queue (login, queue/join, queue/data), as an attacker or a test drives
it without a browser: the event ids come from /config by handler name."""
import json
import uuid

import httpx

# send's inputs after the composer: session id (state), show reasoning, limit (state), then the settings panel
# (preset, system prompt, temperature, top_p, max tokens, thinking budget, replay thinking)
LONG_REPLY = ["Custom", "", 0.0, 1.0, 8000, 0, False]


class QueueClient:
    """One browser tab's worth of queue calls for one logged-in user (or none, without --auth)."""

    def __init__(self, base: str, user: str | None = None, password: str | None = None,
                 session_hash: str | None = None):
        self.http = httpx.Client(base_url=base, timeout=60)
        if user is not None:
            response = self.http.post("/login", data={"username": user, "password": password})
            assert response.status_code == 200, response.text
        self.session_hash = session_hash or uuid.uuid4().hex[:11]
        config = self.http.get("/config").json()
        self.fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def join(self, api_name: str, data: list, session_hash: str | None = None) -> httpx.Response:
        """POST queue/join for the handler called api_name."""
        return self.http.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn[api_name], "session_hash": session_hash or self.session_hash,
            "trigger_id": None, "event_data": None})

    def send(self, text: str, panel=LONG_REPLY) -> httpx.Response:
        """Join the studio's send handler: a new chat with `text`."""
        return self.join("send", [{"text": text, "files": []}, None, False, None, *panel])

    def messages(self, session_hash: str | None = None):
        """The queue/data SSE stream as (status code, iterator of message dicts)."""
        with self.http.stream("GET", "/gradio_api/queue/data",
                              params={"session_hash": session_hash or self.session_hash}) as response:
            if response.status_code != 200:
                response.read()
                yield {"msg": "http_error", "status": response.status_code, "text": response.text}
                return
            for line in response.iter_lines():
                if line.startswith("data:"):
                    yield json.loads(line[5:])

    def close(self) -> None:
        self.http.close()
