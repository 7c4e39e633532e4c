"""The studio's export button makes no file (a link to the owner-checked route, tested over raw HTTP in
tests/test_queue_isolation.py with its two-login server), Gradio's upload copies are deleted after reading, and an
upload the composer reports in more than one change event is read once."""
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


def test_a_file_already_pending_is_not_read_again(tmp_path):
    """The composer can report one upload in two change events: the second finds it pending (same name and size)
    and skips it. A file of the same name but another size, or one already sent with a message, is read again."""
    store = SessionStore(tmp_path / "sessions.db")
    handlers = SessionHandlers(SimpleNamespace(store=store, chat=None))
    uid = handlers.uid(SimpleNamespace(username="alice", headers={}))
    sid = store.create_session(uid)["id"]
    report, notes, other = tmp_path / "report.pdf", tmp_path / "notes.md", tmp_path / "other" / "report.pdf"
    other.parent.mkdir()
    report.write_bytes(b"%PDF-1.4 one")
    notes.write_text("# Notes")
    other.write_bytes(b"%PDF-1.4 a longer one")
    doc = SimpleNamespace(name="report.pdf", kind="pdf", text="one", num_tokens=1, num_bytes=report.stat().st_size,
                          tokens_estimated=False)
    pending = store.add_attachment(uid, sid, doc)
    paths = [str(report), str(notes), str(other)]
    assert handlers._not_pending(uid, sid, paths) == [str(notes), str(other)]
    store.add_turn(uid, sid, "Summarise", attachment_ids=[pending])  # sent: no longer pending
    assert handlers._not_pending(uid, sid, paths) == paths
    store.close()
