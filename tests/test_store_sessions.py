"""SessionStore's sessions, attachments and shares on a real SQLite file, where mutation testing found them loose:
the error texts users see, defaults (list and search limits, attachments without text), fields kept when not
given, attachments given to a message, what a share shows, and a database built without the FTS5 index."""
import json
import sqlite3
from types import SimpleNamespace

import pytest

from studio.store.schema import migrate
from studio.store.store import NotFound, SessionStore


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


def doc(name="notes.txt", text="the plan", estimated=True):
    return SimpleNamespace(name=name, kind="text", text=text, num_tokens=3, num_bytes=len(text),
                           tokens_estimated=estimated)


def turn(store, user, sid, question, answer, reasoning=""):
    user_msg, reply = store.add_turn(user, sid, question)
    store.update_message(user, reply, content=answer, reasoning=reasoning, status="done")
    return user_msg, reply


def test_error_messages_name_the_problem(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice)["id"]
    with pytest.raises(ValueError, match=r"^user name must not be empty$"):
        store.ensure_user("")
    with pytest.raises(ValueError, match=r"^session title must not be empty$"):
        store.rename_session(alice, sid, "  ")
    for call in (lambda: store.update_session(alice, "nope", system_prompt="x"),
                 lambda: store.delete_session(alice, "nope")):
        with pytest.raises(NotFound, match=r"^session 'nope' not found$"):
            call()
    with pytest.raises(NotFound, match=r"^attachment 77 is not a pending upload of yours$"):
        store.remove_attachment(alice, 77)


def test_list_sessions_shows_two_hundred_by_default_and_pages(store):
    alice = store.ensure_user("alice")
    ids = [store.create_session(alice, f"s{n}")["id"] for n in range(201)]
    assert len(store.list_sessions(alice)) == 200
    assert [s["id"] for s in store.list_sessions(alice, limit=2, offset=199)] == [ids[1], ids[0]]


def test_update_session_keeps_the_fields_it_is_not_given(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, system_prompt="Be terse.", settings={"temperature": 0.3})["id"]
    updated = store.update_session(alice, sid, replay_thinking=True)
    assert (updated["system_prompt"], updated["settings"], updated["replay_thinking"]) == \
        ("Be terse.", {"temperature": 0.3}, True)


def test_an_attachment_given_to_a_message_of_its_session_is_sent_with_it(store):
    alice = store.ensure_user("alice")
    sid, other = store.create_session(alice)["id"], store.create_session(alice)["id"]
    user_msg, _ = turn(store, alice, sid, "see the file", "seen")
    attached = store.add_attachment(alice, sid, doc(), message_id=user_msg)
    assert [(a["id"], a["message_id"]) for a in store.attachments(alice, sid)] == [(attached, user_msg)]
    assert store.prompt_messages(alice, sid)[0]["content"].startswith('<document name="notes.txt">')
    with pytest.raises(NotFound, match=rf"^message {user_msg} not found in session '{other}'$"):
        store.add_attachment(alice, other, doc(), message_id=user_msg)
    assert store.attachments(alice, other) == []


def test_attachments_leave_out_the_text_unless_asked_and_keep_the_estimate_flag(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice)["id"]
    store.add_attachment(alice, sid, doc("a.txt", estimated=True))
    store.add_attachment(alice, sid, doc("b.txt", estimated=False))
    listed = store.attachments(alice, sid)
    assert all("text" not in a for a in listed) and [a["tokens_estimated"] for a in listed] == [True, False]
    assert [a["text"] for a in store.attachments(alice, sid, with_text=True)] == ["the plan", "the plan"]
    exported = json.dumps(store.export_json(alice, sid)["attachments"])  # a JSON boolean, as documented
    assert '"tokens_estimated": true' in exported and '"tokens_estimated": false' in exported


def test_a_share_shows_the_whole_path_title_and_date_but_no_pending_or_abandoned_document(store):
    alice = store.ensure_user("alice")
    session = store.create_session(alice, "Shared plan")
    sid = session["id"]
    first = store.add_attachment(alice, sid, doc("first.txt"))
    u1, _ = store.add_turn(alice, sid, "v1", attachment_ids=[first])
    second = store.add_attachment(alice, sid, doc("second.txt"))
    store.edit_turn(alice, u1, "v2", attachment_ids=[second])  # copies first.txt; the v1 branch is abandoned
    u2, reply = turn(store, alice, sid, "and then?", "then this", reasoning="think")
    store.add_attachment(alice, sid, doc("pending.txt"))
    view = store.shared_session(store.create_share(alice, sid))
    assert (view["title"], view["created_at"]) == ("Shared plan", session["created_at"])
    assert [m["content"] for m in view["messages"]] == ["v2", "", "and then?", "then this"]
    assert view["messages"][-1]["reasoning"] == "think"
    assert sorted(d["name"] for d in view["documents"]) == ["first.txt", "second.txt"]  # the copy on v2, and v2's own


def test_an_empty_session_can_be_shared_and_shows_no_messages(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, "Empty")["id"]
    view = store.shared_session(store.create_share(alice, sid))
    assert (view["title"], view["messages"], view["documents"]) == ("Empty", [], [])


def test_a_dead_share_link_says_so(store):
    with pytest.raises(NotFound, match=r"^this share link does not exist, was revoked or has expired$"):
        store.shared_session("no-such-token")


def test_a_database_built_without_the_search_index_is_searched_with_like(tmp_path):
    """A file made by an SQLite without FTS5 trigram (migration 2 was a no-op there) keeps working elsewhere."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    store = SessionStore(path)
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, "Trip")["id"]
    turn(store, alice, sid, "the maple leaves", "red")
    assert not store.has_fts
    assert [(h["session_id"], h["matched"]) for h in store.search(alice, "MAPLE")] == [(sid, "content")]
    store.close()


def test_a_session_reports_its_owner_and_its_share_only_while_shared(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice)["id"]
    fresh = store.get_session(alice, sid)
    assert (fresh["user_id"], fresh["share"]) == (alice, None)
    token = store.create_share(alice, sid, include_reasoning=False, include_documents=True, expires_at=4102444800.0)
    assert store.get_session(alice, sid)["share"] == {"token": token, "reasoning": False, "documents": True,
                                                      "expires_at": 4102444800.0}
    store.create_share(alice, sid)
    assert store.get_session(alice, sid)["share"]["reasoning"] is True
    assert store.get_session(alice, sid)["share"]["documents"] is False
    store.revoke_share(alice, sid)
    assert store.get_session(alice, sid)["share"] is None


def test_the_connection_is_configured_for_concurrent_use(store):
    """WAL with synchronous NORMAL (durable at checkpoints, fast commits) and a 10 s wait for another writer."""
    pragma = lambda name: store._conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert (pragma("journal_mode"), pragma("synchronous"), pragma("busy_timeout"), pragma("foreign_keys")) == \
        ("wal", 1, 10000, 1)
