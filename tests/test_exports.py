"""Exports made on request for their owner only, and upload copies deleted after reading: a real server with two
--auth users and raw HTTP (the export route), plus the studio's export and upload handlers."""
import os
import tempfile
from types import SimpleNamespace

import gradio as gr
import httpx

from studio.store.store import SessionStore
from studio.ui.documents import remove_gradio_copy
from studio.ui.session import SessionHandlers
from tests.app_server import running_app


def _login(base, user, password) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    assert client.post("/login", data={"username": user, "password": password}).status_code == 200
    return client


def test_export_route_serves_only_the_owner(tiny_official, tmp_path):
    args = ["--model", str(tiny_official), "--device", "cpu", "--auth", "alice:pa", "--auth", "bob:pb"]
    with running_app(args, tmp_path) as base:
        store = SessionStore(tmp_path / "sessions.db")  # the server's database, beside it (WAL)
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


def test_export_button_writes_no_file(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    services = SimpleNamespace(store=store, chat=None, root_path="/studio")
    handlers = SessionHandlers(services)
    request = SimpleNamespace(username="alice", headers={})
    sid = store.create_session(handlers.uid(request), "Q3: plan!")["id"]
    before = set(os.listdir(tempfile.gettempdir()))
    link = handlers.export(request, sid, "md")
    assert link == f'<a href="/studio/export/{sid}.md" download="Q3-plan.md">⬇ Q3-plan.md</a>'
    assert not {name for name in set(os.listdir(tempfile.gettempdir())) - before if name.startswith("m1-export")}
    store.close()


def test_gradio_upload_copies_are_deleted_and_nothing_else(tmp_path):
    folder = gr.utils.get_upload_folder()
    os.makedirs(os.path.join(folder, "h7b-test"), exist_ok=True)
    copy = os.path.join(folder, "h7b-test", "report.pdf")
    open(copy, "wb").write(b"%PDF-1.4")
    elsewhere = tmp_path / "mine.pdf"
    elsewhere.write_bytes(b"%PDF-1.4")
    remove_gradio_copy(copy)
    remove_gradio_copy(str(elsewhere))
    assert not os.path.exists(copy) and elsewhere.exists()
