"""Gradio's session hash is bound to the login that first used it: with alice's hash, bob (raw HTTP: queue/join,
queue/data, cancel, heartbeat) gets 403 and none of her stream; a client without a login gets 401; no error message
carries a session hash or a chat id; exports (GET /export/{id}.{fmt}) go to their owner only. A real server with two
--auth users."""
import threading

import httpx
import pytest

from studio.store.store import SessionStore
from tests.app_server import running_app
from tests.gradio_queue import QueueClient

PANEL = ["Custom", "", 0.0, 1.0, 400, 0, False]


@pytest.fixture(scope="module")
def two_users(tiny_official, tmp_path_factory):
    """(base URL, data dir) of one server with logins alice:pa and bob:pb."""
    data_dir = tmp_path_factory.mktemp("two_users")
    args = ["--model", str(tiny_official), "--device", "cpu", "--auth", "alice:pa", "--auth", "bob:pb"]
    with running_app(args, data_dir) as base:
        yield base, data_dir


@pytest.fixture
def server(two_users):
    return two_users[0]


def test_another_login_cannot_use_a_session_hash(server):
    alice = QueueClient(server, "alice", "pa")
    bob = QueueClient(server, "bob", "pb", session_hash=alice.session_hash)
    assert alice.send("Write a very long essay", PANEL).status_code == 200
    seen_by_alice = []
    reader = threading.Thread(target=lambda: seen_by_alice.extend(_until_done(alice.messages())))
    reader.start()
    stolen = list(_until_done(bob.messages()))
    assert [m["msg"] for m in stolen] == ["http_error"] and stolen[0]["status"] == 403, stolen
    joined = bob.send("hi", PANEL)
    cancelled = bob.http.post("/gradio_api/cancel", json={"session_hash": alice.session_hash, "fn_index": 0,
                                                          "event_id": "x"})
    heartbeat = bob.http.get(f"/gradio_api/heartbeat/{alice.session_hash}", timeout=5)
    assert (joined.status_code, cancelled.status_code, heartbeat.status_code) == (403, 403, 403)
    for response in (joined, cancelled, heartbeat, stolen[0]):
        text = response["text"] if isinstance(response, dict) else response.text
        assert alice.session_hash not in text and "another" in text
    reader.join(120)
    kinds = [m["msg"] for m in seen_by_alice]
    assert "process_generating" in kinds and kinds[-1] == "process_completed" and seen_by_alice[-1]["success"]
    for client in (alice, bob):
        client.close()


def test_own_hash_works_and_no_login_is_refused(server):
    bob = QueueClient(server, "bob", "pb")
    assert bob.send("Hello", PANEL).status_code == 200
    messages = list(_until_done(bob.messages()))
    assert messages[-1]["msg"] == "process_completed" and messages[-1]["success"]
    anonymous = QueueClient.__new__(QueueClient)
    anonymous.http = bob.http.__class__(base_url=server, timeout=30)
    refused = anonymous.http.post("/gradio_api/cancel", json={"session_hash": bob.session_hash, "fn_index": 0,
                                                              "event_id": "x"})
    assert refused.status_code == 401 and bob.session_hash not in refused.text
    bob.close()
    anonymous.http.close()


def _login(base, user, password) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    assert client.post("/login", data={"username": user, "password": password}).status_code == 200
    return client


def test_export_route_serves_only_the_owner(two_users):
    base, data_dir = two_users
    store = SessionStore(data_dir / "sessions.db")  # the server's database, beside it (WAL)
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, "Alice plan")["id"]
    _, reply = store.add_turn(alice, sid, "the secret question")
    store.update_message(alice, reply, content="the secret answer", status="done")
    owner, other = _login(base, "alice", "pa"), _login(base, "bob", "pb")
    markdown = owner.get(f"/export/{sid}.md")
    assert markdown.status_code == 200 and "the secret answer" in markdown.text
    assert markdown.headers["content-disposition"] == "attachment; filename*=UTF-8''Alice-plan.md"
    exported = owner.get(f"/export/{sid}.json").json()
    assert exported["session"]["title"] == "Alice plan" and len(exported["messages"]) == 2
    for response in (other.get(f"/export/{sid}.md"), other.get(f"/export/{sid}.json")):
        assert response.status_code == 404 and sid not in response.text and "secret" not in response.text
    anonymous = httpx.get(f"{base}/export/{sid}.md")
    assert anonymous.status_code == 401 and "secret" not in anonymous.text
    store.delete_session(alice, sid)
    assert owner.get(f"/export/{sid}.md").status_code == 404
    store.close()


def _until_done(messages):
    for message in messages:
        yield message
        if message["msg"] in ("process_completed", "http_error"):
            return
