"""Table-driven isolation of the session store: every public SessionStore method that takes a user is in the
table below, and user B gets NotFound (or nothing of A's) for each of user A's objects. A new method with a
`user_id` parameter fails `test_every_user_method_is_in_the_table` until it is added here."""
import inspect
from types import SimpleNamespace

import pytest

from studio.store.store import NotFound, SessionStore


def _doc(name="notes.txt", text="alice's secret plan"):
    return SimpleNamespace(name=name, kind="text", text=text, num_tokens=5, num_bytes=len(text),
                           tokens_estimated=True)


@pytest.fixture
def world(tmp_path):
    """Alice's session with a finished turn, a sent and a pending attachment, a share; Bob has his own session."""
    store = SessionStore(tmp_path / "sessions.db")
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    sid = store.create_session(alice, "Alice private")["id"]
    sent = store.add_attachment(alice, sid, _doc("sent.txt"))
    user_msg, reply = store.add_turn(alice, sid, "alice secret question", attachment_ids=[sent])
    store.update_message(alice, reply, content="alice secret answer", status="done")
    pending = store.add_attachment(alice, sid, _doc("pending.txt"))
    store.create_share(alice, sid)
    bob_sid = store.create_session(bob, "Bob's")["id"]
    yield SimpleNamespace(store=store, alice=alice, bob=bob, sid=sid, user_msg=user_msg, reply=reply,
                          pending=pending, bob_sid=bob_sid)
    store.close()


def _file_calls(w):
    """Per-user files of the store (uploads and exports under the data dir), when the store has them."""
    return {
        "save_file": lambda: w.store.save_file(w.bob, w.sid, "upload", "x.txt", b"bob"),
        "file_path": lambda: w.store.file_path(w.bob, w.sid, "upload", "x.txt"),
        "delete_files": lambda: w.store.delete_files(w.bob, w.sid),
    }


# method -> what Bob does with Alice's objects. Each must raise NotFound.
DENIED = {
    "get_session": lambda w: w.store.get_session(w.bob, w.sid),
    "rename_session": lambda w: w.store.rename_session(w.bob, w.sid, "mine"),
    "update_session": lambda w: w.store.update_session(w.bob, w.sid, system_prompt="pwned"),
    "delete_session": lambda w: w.store.delete_session(w.bob, w.sid),
    "add_attachment": lambda w: w.store.add_attachment(w.bob, w.sid, _doc("bob.txt")),
    "attachments": lambda w: w.store.attachments(w.bob, w.sid, with_text=True),
    "remove_attachment": lambda w: w.store.remove_attachment(w.bob, w.pending),
    "create_share": lambda w: w.store.create_share(w.bob, w.sid),
    "revoke_share": lambda w: w.store.revoke_share(w.bob, w.sid),
    "add_turn": lambda w: w.store.add_turn(w.bob, w.sid, "hi"),
    "add_child": lambda w: w.store.add_child(w.bob, w.reply, "tool", "[]"),
    "regenerate": lambda w: w.store.regenerate(w.bob, w.reply),
    "edit_turn": lambda w: w.store.edit_turn(w.bob, w.user_msg, "edited"),
    "update_message": lambda w: w.store.update_message(w.bob, w.reply, content="changed"),
    "get_message": lambda w: w.store.get_message(w.bob, w.reply),
    "siblings": lambda w: w.store.siblings(w.bob, w.reply),
    "select_message": lambda w: w.store.select_message(w.bob, w.user_msg),
    "active_path": lambda w: w.store.active_path(w.bob, w.sid),
    "all_messages": lambda w: w.store.all_messages(w.bob, w.sid),
    "prompt_messages": lambda w: w.store.prompt_messages(w.bob, w.sid),
    "budget": lambda w: w.store.budget(w.bob, w.sid, len, 16),
    "export_json": lambda w: w.store.export_json(w.bob, w.sid),
    "export_markdown": lambda w: w.store.export_markdown(w.bob, w.sid),
    **{name: (lambda w, name=name: _file_calls(w)[name]()) for name in ("save_file", "file_path", "delete_files")},
}

# user-scoped methods that take no object of another user: Bob's result must hold nothing of Alice's.
SCOPED = {
    "create_session": lambda w: w.store.create_session(w.bob, "new"),
    "list_sessions": lambda w: w.store.list_sessions(w.bob),
    "search": lambda w: w.store.search(w.bob, "secret"),
    "import_json": lambda w: w.store.import_json(w.bob, w.store.export_json(w.bob, w.bob_sid)),
}


def _user_methods() -> set[str]:
    """Public methods taking user_id (mutmut's copies of each method, named `x...__mutmut_N`, are not public API)."""
    return {name for name, member in inspect.getmembers(SessionStore, inspect.isfunction)
            if not name.startswith("_") and "__mutmut_" not in name
            and "user_id" in inspect.signature(member).parameters}


def test_every_user_method_is_in_the_table():
    methods = _user_methods()
    missing = methods - set(DENIED) - set(SCOPED)
    assert not missing, f"add {sorted(missing)} to the isolation table of tests/test_store_isolation.py"
    assert {"remove_attachment", "update_message", "delete_session"} <= methods


def _snapshot(w) -> tuple:
    s = w.store
    return (s.get_session(w.alice, w.sid), s.all_messages(w.alice, w.sid), s.attachments(w.alice, w.sid,
            with_text=True), s.shared_session(s.get_session(w.alice, w.sid)["share"]["token"])["messages"])


@pytest.mark.parametrize("method", sorted(m for m in DENIED if m in _user_methods()))
def test_other_users_objects_are_not_found(world, method):
    before = _snapshot(world)
    with pytest.raises(NotFound):
        DENIED[method](world)
    assert _snapshot(world) == before, f"{method} by bob changed alice's session"


@pytest.mark.parametrize("method", sorted(SCOPED))
def test_user_scoped_results_hold_nothing_of_another_user(world, method):
    before = _snapshot(world)
    result = SCOPED[method](world)
    assert "alice" not in repr(result).lower() and world.sid not in repr(result)
    assert _snapshot(world) == before
    ids = {s["id"] for s in world.store.list_sessions(world.bob)}
    assert world.sid not in ids and world.bob_sid in ids
