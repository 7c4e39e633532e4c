"""Export and import on a real SQLite store, to the character: the Markdown of a small session, the JSON fields, and
each way an import file can be wrong refused with its whole message and nothing written (fast; the mutation run uses
it)."""
import json
import time

import pytest

from studio.documents.documents import read_document
from studio.store.export import EXPORT_FORMAT, EXPORT_VERSION, parse_import
from studio.store.store import SessionStore

CREATED = 1_767_225_600.0  # 2026-01-01 00:00 UTC


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


def small_session(store, user) -> str:
    """System prompt, a question with a text file, two answers (the second selected, with reasoning), a pending file."""
    sid = store.create_session(user, "Notes", system_prompt="Be brief.", settings={"temperature": 0.5},
                               replay_thinking=True)["id"]
    store._conn.execute("UPDATE sessions SET created_at = ? WHERE id = ?", (CREATED, sid))
    file = store.add_attachment(user, sid, read_document(b"twelve pears", original_name="fruit.txt"))
    question, first = store.add_turn(user, sid, "How many?", attachment_ids=[file])
    store.update_message(user, first, content="Ten.", status="done", stats={"answer_tokens": 1})
    second = store.regenerate(user, first)
    store.update_message(user, second, content="Twelve.", reasoning="The file says twelve.", status="done")
    store.add_attachment(user, sid, read_document(b"later", original_name="later.txt"))
    return sid


def test_markdown_of_a_small_session(store):
    alice = store.ensure_user("alice")
    sid = small_session(store, alice)
    tokens = store.attachments(alice, sid)[0]["num_tokens"]
    assert store.export_markdown(alice, sid) == (
        "# Notes\n\n*Exported from M1 Studio · created 2026-01-01 00:00 UTC · 2 messages*\n\n"
        "## System\n\nBe brief.\n\n"
        f"## User\n\n📎 fruit.txt (text, {tokens:,} tokens)\n\nHow many?\n\n"
        "## Assistant (version 2 of 2)\n\n<details><summary>Thinking</summary>\n\nThe file says twelve.\n\n"
        "</details>\n\nTwelve.\n")


def test_markdown_dates_are_utc_whatever_the_server_zone(store, monkeypatch):
    alice = store.ensure_user("alice")
    sid = small_session(store, alice)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert "created 2026-01-01 00:00 UTC" in store.export_markdown(alice, sid)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_markdown_without_system_prompt_or_thinking(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, "Plain")["id"]
    user_msg, reply = store.add_turn(alice, sid, "Hi")
    store.update_message(alice, reply, content="Hello.", status="done")
    markdown = store.export_markdown(alice, sid)
    assert markdown.endswith("2 messages*\n\n## User\n\nHi\n\n## Assistant\n\nHello.\n")
    assert "System" not in markdown and "<details>" not in markdown


def test_json_export_round_trips_every_field(store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    exported = store.export_json(alice, small_session(store, alice))
    assert (exported["format"], exported["version"]) == ("m1-studio-session", 1) == (EXPORT_FORMAT, EXPORT_VERSION)
    assert exported["session"] == {**exported["session"], "title": "Notes", "system_prompt": "Be brief.",
                                   "settings": {"temperature": 0.5}, "replay_thinking": True, "created_at": CREATED}
    assert [(m["role"], m["content"], m["selected"]) for m in exported["messages"]] == \
        [("user", "How many?", True), ("assistant", "Ten.", False), ("assistant", "Twelve.", True)]
    assert [(a["name"], a["text"], a["message_id"] is None) for a in exported["attachments"]] == \
        [("fruit.txt", "twelve pears", False), ("later.txt", "later", True)]
    copy = store.import_json(bob, json.dumps(exported).encode())
    again = store.export_json(bob, copy)
    assert again["session"] == exported["session"]
    strip = ("id", "parent_id", "message_id")
    for key in ("messages", "attachments"):
        assert [{k: v for k, v in item.items() if k not in strip} for item in again[key]] == \
            [{k: v for k, v in item.items() if k not in strip} for item in exported[key]]
    parents = {m["id"]: m["parent_id"] for m in again["messages"]}
    question = again["messages"][0]["id"]
    assert parents[question] is None and [parents[m["id"]] for m in again["messages"][1:]] == [question, question]
    assert again["attachments"][0]["message_id"] == question and again["attachments"][1]["message_id"] is None
    assert store.export_markdown(bob, copy) == store.export_markdown(alice, store.list_sessions(alice)[0]["id"])


def _set(path, value):
    def change(export):
        *keys, last = path
        target = export
        for key in keys:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return change


BAD = {
    "not-json": ("{oops", "import: the file is not valid JSON (line 1: Expecting property name enclosed in double quotes)"),
    "a-list": ([1], "import: not an M1 Studio session export (expected format 'm1-studio-session')"),
    "format": (_set(["format"], "x"), "import: not an M1 Studio session export (expected format 'm1-studio-session')"),
    "version": (_set(["version"], 2), "import: export version 2 is not supported (expected 1)"),
    "no-version": (_set(["version"], KeyError), "import: export version None is not supported (expected 1)"),
    "session": (_set(["session"], "x"), "import: session must be an object"),
    "session-fields": (_set(["session", "title"], KeyError), "import: session lacks title"),
    "messages-list": (_set(["messages"], {}), "import: 'messages' must be a list"),
    "message-object": (_set(["messages", 0], 3), "import: messages[0] must be an object"),
    "message-fields": (lambda e: [e["messages"][1].pop(k) for k in ("role", "stats")],
                       "import: messages[1] lacks role, stats"),
    "status": (_set(["messages", 2, "status"], "lost"),
               "import: messages[2] has role 'assistant' / status 'lost'; expected one of user, assistant, tool / "
               "streaming, done, stopped, error, interrupted"),
    "content": (_set(["messages", 1, "content"], 5), "import: messages[1] content and reasoning must be strings"),
    "reasoning": (_set(["messages", 1, "reasoning"], None), "import: messages[1] content and reasoning must be strings"),
    "repeat": (lambda e: e["messages"][2].update(id=e["messages"][1]["id"]), "import: messages[2] repeats message id"),
    "parent-later": (lambda e: e["messages"][0].update(parent_id=7_777),
                     "import: messages[0] refers to parent 7777, which does not come before it in the file"),
    "two-selected": (_set(["messages", 1, "selected"], True), "import: the file breaks the session tree ("),
    "attachments-list": (_set(["attachments"], None), "import: 'attachments' must be a list"),
    "attachment-fields": (_set(["attachments", 1, "kind"], KeyError), "import: attachments[1] lacks kind"),
    "attachment-message": (_set(["attachments", 0, "message_id"], 999_999),
                           "import: attachments[0] refers to message 999999, which is not in the file"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_import_is_refused_with_its_reason_and_adds_nothing(store, case):
    alice = store.ensure_user("alice")
    exported = store.export_json(alice, small_session(store, alice))
    change, message = BAD[case]
    data = change if not callable(change) else exported
    if callable(change):
        change(exported)
    with pytest.raises(ValueError) as info:
        store.import_json(alice, data)
    assert str(info.value).startswith(message), str(info.value)
    if case == "two-selected":  # SQLite's own words in the middle
        assert str(info.value).endswith("); two selected versions of one message, or a duplicate message id?")
    elif case != "not-json":
        assert str(info.value) == message or case in ("repeat",), str(info.value)
    assert len(store.list_sessions(alice)) == 1
    assert store._conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3


def test_parse_import_accepts_text_bytes_and_dicts(store):
    alice = store.ensure_user("alice")
    exported = store.export_json(alice, small_session(store, alice))
    assert parse_import(json.dumps(exported)) == parse_import(json.dumps(exported).encode()) == exported
    assert parse_import(exported) is exported
