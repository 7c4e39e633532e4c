"""The studio's export button makes no file (a link to the owner-checked route, tested over raw HTTP in
tests/test_queue_isolation.py with its two-login server) and Gradio's upload copies are deleted after reading."""
import os
import tempfile
from types import SimpleNamespace

import gradio as gr

from studio.store.store import SessionStore
from studio.ui.documents import remove_gradio_copy
from studio.ui.session import SessionHandlers


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
