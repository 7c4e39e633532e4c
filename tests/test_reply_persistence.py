"""A crash keeps what was shown: a studio reply streamed through the real queue, the server killed with -9 mid-reply,
restarted on the same --data-dir: the stored reply has the streamed text and status "interrupted"."""
import os
import signal
import time

from studio.store.store import INTERRUPTED, SessionStore
from tests.app_server import start_app
from tests.gradio_queue import QueueClient

STREAM_S = 3.0


def test_kill_9_mid_reply_keeps_the_partial_text(tiny_official, tmp_path):
    args = ["--model", str(tiny_official), "--device", "cpu"]
    proc, base = start_app(args, tmp_path)
    try:
        client = QueueClient(base)
        assert client.send("Write a very long essay").status_code == 200
        first_text = None
        for message in client.messages():
            assert message["msg"] != "process_completed", f"the reply ended before the kill: {message}"
            if message["msg"] == "process_generating":
                first_text = first_text or time.perf_counter()
                if time.perf_counter() - first_text > STREAM_S:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    store = SessionStore(tmp_path / "sessions.db")
    [(reply_id, status, shown)] = store._rows(
        "SELECT id, status, length(content) + length(reasoning) FROM messages WHERE role = 'assistant'")
    store.close()
    assert status == "streaming" and shown > 0, "nothing of the streamed reply was stored before the kill"
    proc, base = start_app(args, tmp_path)  # the same --data-dir: the dead process's lock is taken over
    try:
        store = SessionStore(tmp_path / "sessions.db")
        [row] = store._rows("SELECT status, stats, length(content) + length(reasoning) AS n FROM messages "
                            "WHERE id = ?", reply_id)
        assert row["status"] == "interrupted" and INTERRUPTED in row["stats"] and row["n"] == shown
        store.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
