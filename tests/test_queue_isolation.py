"""Gradio's session hash is bound to the login that first used it: with alice's hash, bob (raw HTTP: queue/join,
queue/data, cancel, heartbeat) gets 403 and none of her stream; a client without a login gets 401; no error message
carries a session hash or a chat id. A real server with two --auth users."""
import threading

import pytest

from tests.app_server import running_app
from tests.gradio_queue import QueueClient

PANEL = ["Custom", "", 0.0, 1.0, 400, 0, False]


@pytest.fixture(scope="module")
def server(tiny_official, tmp_path_factory):
    args = ["--model", str(tiny_official), "--device", "cpu", "--auth", "alice:pa", "--auth", "bob:pb"]
    with running_app(args, tmp_path_factory.mktemp("queue")) as base:
        yield base


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


def _until_done(messages):
    for message in messages:
        yield message
        if message["msg"] in ("process_completed", "http_error"):
            return
