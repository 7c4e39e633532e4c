"""Session store on a real SQLite file: persistence, branches, export/import, search, isolation, sharing, budget."""
import json
import sqlite3
import threading
import time

import pytest
from tokenizers.pre_tokenizers import ByteLevel

import fixtures_docs as fx
from studio.documents.documents import read_document
from studio.store.store import DEFAULT_TITLE, NotFound, SessionStore
from studio.store.schema import SCHEMA_VERSION, fts5_trigram_available, migrate
from studio.store.search import search_sessions

_PRE = ByteLevel(add_prefix_space=False, use_regex=True)


def count_pretokens(text: str) -> int:
    """A real boundary-sensitive counter: the byte-level BPE pre-tokenizer's piece count."""
    return len(_PRE.pre_tokenize_str(text))


@pytest.fixture
def db(tmp_path):
    return tmp_path / "sessions.db"


@pytest.fixture
def store(db):
    store = SessionStore(db)
    yield store
    store.close()


def finish(store, user, message_id, content, reasoning=""):
    store.update_message(user, message_id, content=content, reasoning=reasoning, status="done",
                         stats={"answer_tokens": len(content.split())})


def chat(store, user, session_id, question, answer, reasoning=""):
    """One finished turn; returns (user_message_id, assistant_message_id)."""
    user_msg, reply = store.add_turn(user, session_id, question)
    finish(store, user, reply, answer, reasoning)
    return user_msg, reply


def test_wal_schema_version_and_foreign_keys(store, db):
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.has_fts == fts5_trigram_available(raw)


def test_migration_from_version_1_backfills_search(db):
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute("INSERT INTO users (id, name, created_at) VALUES (1, 'old', 0)")
    conn.execute("INSERT INTO sessions (id, user_id, title, created_at, updated_at) VALUES ('s1', 1, 'Legacy', 0, 0)")
    conn.execute("INSERT INTO messages (session_id, role, content, created_at) VALUES ('s1', 'user', "
                 "'the zeppelin timetable', 0)")
    conn.close()
    store = SessionStore(db)
    assert [hit["session_id"] for hit in store.search(1, "Zeppelin")] == ["s1"]
    assert store._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_is_refused(db):
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match=r"schema version 99 is newer than this build supports \(2\)"):
        SessionStore(db)


def test_persistence_across_reopening(db, tmp_path):
    first = SessionStore(db)
    alice = first.ensure_user("alice")
    session = first.create_session(alice, system_prompt="Be terse.", settings={"temperature": 0.7})
    doc = read_document(fx.make_docx(tmp_path / "plan.docx"))
    attachment = first.add_attachment(alice, session["id"], doc)
    user_msg, reply = first.add_turn(alice, session["id"], "Summarise the plan", attachment_ids=[attachment])
    first.update_message(alice, reply, content="Three phases.", status="stopped")
    path, files = first.active_path(alice, session["id"]), first.attachments(alice, session["id"], with_text=True)
    first.close()
    second = SessionStore(db)
    assert second.ensure_user("alice") == alice
    reopened = second.get_session(alice, session["id"])
    assert reopened["title"] == "Summarise the plan" and reopened["settings"] == {"temperature": 0.7}
    assert second.active_path(alice, session["id"]) == path and path[-1]["status"] == "stopped"
    assert second.attachments(alice, session["id"], with_text=True) == files
    assert files[0]["message_id"] == user_msg and "| North | 120 | 4800 |" in files[0]["text"]
    second.close()


def test_list_rename_delete_cascade(store):
    alice = store.ensure_user("alice")
    older, newer = store.create_session(alice, "Older"), store.create_session(alice, "Newer")
    assert [s["title"] for s in store.list_sessions(alice)] == ["Newer", "Older"]
    chat(store, alice, older["id"], "bump me", "ok")
    store.rename_session(alice, older["id"], "  Renamed  ")
    assert [s["title"] for s in store.list_sessions(alice)] == ["Renamed", "Newer"]
    with pytest.raises(ValueError, match="must not be empty"):
        store.rename_session(alice, older["id"], " ")
    store.delete_session(alice, older["id"])
    with pytest.raises(NotFound, match=f"session '{older['id']}' not found"):
        store.get_session(alice, older["id"])
    assert store._conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert store.search(alice, "bump") == []
    if store.has_fts:  # cascade deletes went through the index triggers: the index matches the table
        store._conn.execute("INSERT INTO message_search(message_search) VALUES ('integrity-check')")
        assert store._conn.execute("SELECT count(*) FROM message_search WHERE message_search MATCH 'bump'"
                                   ).fetchone()[0] == 0


def test_regenerate_and_edit_make_siblings_and_selection_follows(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice)["id"]
    u1, a1 = chat(store, alice, sid, "Hi", "Hello")
    u2, a2 = chat(store, alice, sid, "Capital of France?", "Paris", reasoning="Easy.")
    a2b = store.regenerate(alice, a2)
    finish(store, alice, a2b, "It is Paris.")
    assert [m["id"] for m in store.siblings(alice, a2)] == [a2, a2b]
    assert [m["id"] for m in store.active_path(alice, sid)] == [u1, a1, u2, a2b]
    assert store.select_message(alice, a2)[-1]["id"] == a2
    u2b, a2c = store.edit_turn(alice, u2, "Capital of Spain?")
    finish(store, alice, a2c, "Madrid")
    path = store.active_path(alice, sid)
    assert [m["id"] for m in path] == [u1, a1, u2b, a2c]
    assert [(m["sibling_index"], m["sibling_count"]) for m in path] == [(1, 1), (1, 1), (2, 2), (1, 1)]
    assert [m["id"] for m in store.select_message(alice, u2)] == [u1, a1, u2, a2]  # its own selected reply
    assert len(store.all_messages(alice, sid)) == 7
    with pytest.raises(ValueError, match="is a user message; regenerate an assistant reply"):
        store.regenerate(alice, u1)


def test_prompt_messages_replay_thinking_and_before(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, system_prompt="You are M1.")["id"]
    chat(store, alice, sid, "2+2?", "4", reasoning="Add them.")
    _, reply = store.add_turn(alice, sid, "and 3+3?")
    expected = [{"role": "system", "content": "You are M1."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]
    assert store.prompt_messages(alice, sid, before=reply) == expected
    assert store.prompt_messages(alice, sid, before=reply, replay_thinking=True)[2]["content"] == \
        "<think>\nAdd them.\n</think>\n4"
    store.update_session(alice, sid, replay_thinking=True)
    assert store.prompt_messages(alice, sid)[2]["content"].startswith("<think>")


def test_turn_is_one_transaction(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice)["id"]
    with pytest.raises(NotFound, match="attachment 999 is not a pending upload of this session"):
        store.add_turn(alice, sid, "with a missing file", attachment_ids=[999])
    assert store.active_path(alice, sid) == [] and store.get_session(alice, sid)["title"] == DEFAULT_TITLE
    with pytest.raises(ValueError, match="status 'paused' is not one of"):
        store.add_turn(alice, sid, "x", status="paused")
    assert store._conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0


def build_rich_session(store, user, tmp_path) -> str:
    sid = store.create_session(user, system_prompt="Cite pages.", settings={"max_tokens": 2048})["id"]
    doc = read_document(fx.make_pdf(tmp_path / "report.pdf"))
    attachment = store.add_attachment(user, sid, doc)
    u1, a1 = store.add_turn(user, sid, "What grew?", attachment_ids=[attachment])
    finish(store, user, a1, "Sales grew [p.1].", reasoning="Page 1 says so.")
    finish(store, user, store.regenerate(user, a1), "Sales, in every region.")
    store.edit_turn(user, u1, "What is on page 2?")
    return sid


def without_ids(export: dict) -> dict:
    """The export with message/attachment ids replaced by their position (parents mapped the same way)."""
    position = {m["id"]: i for i, m in enumerate(export["messages"])}
    position[None] = None
    messages = [dict(m, id=position[m["id"]], parent_id=position[m["parent_id"]]) for m in export["messages"]]
    attachments = [dict(a, id=i, message_id=position[a["message_id"]]) for i, a in enumerate(export["attachments"])]
    return dict(export, messages=messages, attachments=attachments)


def test_export_import_round_trip(store, tmp_path):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    sid = build_rich_session(store, alice, tmp_path)
    exported = store.export_json(alice, sid)
    assert len(exported["messages"]) == 5 and len(exported["attachments"]) == 2  # the edit copies the document
    copy = store.import_json(bob, json.dumps(exported))
    again = store.export_json(bob, copy)
    assert {m["id"] for m in again["messages"]}.isdisjoint(m["id"] for m in exported["messages"])
    assert without_ids(again) == without_ids(exported)
    assert [m["content"] for m in store.active_path(bob, copy)] == \
        [m["content"] for m in store.active_path(alice, sid)]


@pytest.mark.parametrize("mutate,message", [
    (lambda e: e.update(format="other"), "not an M1 Studio session export"),
    (lambda e: e["messages"][1].update(parent_id=12345), r"messages\[1\] refers to parent 12345"),
    (lambda e: e["messages"][0].update(role="robot"), r"messages\[0\] has role 'robot'"),
    (lambda e: e["messages"][1].update(selected=True), "breaks the session tree"),
], ids=["format", "parent", "role", "two-selected"])
def test_bad_import_adds_nothing(store, tmp_path, mutate, message):
    alice = store.ensure_user("alice")
    exported = store.export_json(alice, build_rich_session(store, alice, tmp_path))
    mutate(exported)
    with pytest.raises(ValueError, match=message):
        store.import_json(alice, exported)
    assert len(store.list_sessions(alice)) == 1


def test_export_markdown_is_readable(store, tmp_path):
    alice = store.ensure_user("alice")
    sid = build_rich_session(store, alice, tmp_path)
    store.select_message(alice, store.all_messages(alice, sid)[0]["id"])
    markdown = store.export_markdown(alice, sid)
    assert markdown.startswith("# What grew?\n\n*Exported from M1 Studio")
    assert "## System\n\nCite pages." in markdown and "📎 report.pdf (pdf, " in markdown
    assert "## User (version 1 of 2)\n\n📎 report.pdf" in markdown
    assert "## Assistant (version 2 of 2)\n\nSales, in every region." in markdown
    store.select_message(alice, store.all_messages(alice, sid)[1]["id"])
    assert "<details><summary>Thinking</summary>\n\nPage 1 says so.\n\n</details>\n\nSales grew [p.1]." in \
        store.export_markdown(alice, sid)


def test_search_by_title_and_content(store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    trip = store.create_session(alice, "Trip to Kyoto")["id"]
    chat(store, alice, trip, "Best season?", "Autumn, for the maple leaves.")
    budget = store.create_session(alice, "Budget")["id"]
    chat(store, alice, budget, "Is 100% of 长上下文 used?", "Yes")
    chat(store, bob, store.create_session(bob, "Kyoto too")["id"], "maple", "leaves")
    assert [(h["session_id"], h["matched"]) for h in store.search(alice, "kyoto")] == [(trip, "title")]
    hit, = store.search(alice, "MAPLE LEAVES")
    assert (hit["session_id"], hit["matched"], hit["snippet"]) == (trip, "content", "Autumn, for the maple leaves.")
    assert [h["session_id"] for h in store.search(alice, "上下文")] == [budget]
    assert [h["session_id"] for h in store.search(alice, "0%")] == [budget]  # LIKE path, % escaped
    assert store.search(alice, "1_0") == [] and store.search(alice, "  ") == []


def test_like_fallback_finds_what_the_index_finds(store):
    alice = store.ensure_user("alice")
    for title, answer in (("One", "Der Zug fährt um acht."), ("Two", "The train leaves at EIGHT.")):
        chat(store, alice, store.create_session(alice, title)["id"], "when?", answer)
    for query in ("eight", "fährt", "at e", "ZUG", "nothing"):
        with store._lock:
            fallback = search_sessions(store._conn, alice, query, use_fts=False)
        assert fallback == store.search(alice, query)
    assert [hit["title"] for hit in store.search(alice, "zug")] == ["One"]
    assert [hit["title"] for hit in store.search(alice, "E")] == ["One", "Two"]  # title hits before newer content


def test_user_isolation(store):
    alice, bob = store.ensure_user("alice"), store.ensure_user("bob")
    sid = store.create_session(alice, "Private")["id"]
    user_msg, reply = chat(store, alice, sid, "secret", "kept")
    assert store.list_sessions(bob) == [] and store.search(bob, "secret") == []
    for attempt in (lambda: store.get_session(bob, sid), lambda: store.rename_session(bob, sid, "mine"),
                    lambda: store.delete_session(bob, sid), lambda: store.add_turn(bob, sid, "hi"),
                    lambda: store.export_json(bob, sid), lambda: store.active_path(bob, sid),
                    lambda: store.update_message(bob, reply, content="changed"),
                    lambda: store.select_message(bob, user_msg), lambda: store.regenerate(bob, reply)):
        with pytest.raises(NotFound):
            attempt()
    assert store.get_message(alice, reply)["content"] == "kept" and store.get_session(alice, sid)["title"] == "Private"


def test_share_is_frozen_read_only_and_revocable(store, tmp_path):
    alice = store.ensure_user("alice")
    sid = build_rich_session(store, alice, tmp_path)
    token = store.create_share(alice, sid, include_reasoning=False)
    chat(store, alice, sid, "a later question", "a later answer")
    view = store.shared_session(token)
    assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
    assert view["messages"][0]["content"] == "What is on page 2?" and "reasoning" not in view["messages"][1]
    assert [sorted(d) for d in view["documents"]] == [["kind", "name", "num_tokens"]]  # no text shared
    assert view["documents"][0]["name"] == "report.pdf"
    assert store.get_session(alice, sid)["share"]["token"] == token
    store.revoke_share(alice, sid)
    with pytest.raises(NotFound, match="does not exist, was revoked or has expired"):
        store.shared_session(token)
    expired = store.create_share(alice, sid, include_documents=True, expires_at=time.time() - 1)
    with pytest.raises(NotFound):
        store.shared_session(expired)


def test_a_default_share_carries_reasoning_and_can_carry_document_text(store, tmp_path):
    alice = store.ensure_user("alice")
    sid = build_rich_session(store, alice, tmp_path)
    finish(store, alice, store.active_path(alice, sid)[-1]["id"], "Page 2 holds the outlook.", reasoning="Read p.2.")
    view = store.shared_session(store.create_share(alice, sid, include_documents=True))
    assert [m.get("reasoning") for m in view["messages"]][-1] == "Read p.2."
    assert [sorted(d) for d in view["documents"]] == [["kind", "name", "num_tokens", "text"]]
    assert view["documents"][0]["text"] == store.attachments(alice, sid, with_text=True)[0]["text"] != ""


def test_update_session_writes_each_given_field(store):
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, system_prompt="Cite pages.", settings={"max_tokens": 2048})["id"]
    replay = store.get_session(alice, sid)["replay_thinking"]
    updated = store.update_session(alice, sid, system_prompt="Be brief.", settings={"temperature": 0.5})
    assert (updated["system_prompt"], updated["settings"], updated["replay_thinking"]) == \
        ("Be brief.", {"temperature": 0.5}, replay)
    assert store.get_session(alice, sid)["system_prompt"] == "Be brief."


def test_budget_counts_the_texts_that_are_sent(store, tmp_path):
    alice = store.ensure_user("alice")
    sid = build_rich_session(store, alice, tmp_path)
    finish(store, alice, store.active_path(alice, sid)[-1]["id"], "Page 2 holds the outlook.")
    sent = sum(count_pretokens(m["content"]) for m in store.prompt_messages(alice, sid))
    result = store.budget(alice, sid, count_pretokens, reserved_output=4096)
    assert result["system"] + result["documents_total"] + result["history"] + result["template"] == sent
    assert [d["name"] for d in result["documents"]] == ["report.pdf"] and result["total"] == sent + 4096
    assert result["remaining"] == 1_000_000 - result["total"] and result["fits"]
    pending = store.add_attachment(alice, sid, read_document(b"extra notes", original_name="notes.txt"))
    tight = store.budget(alice, sid, count_pretokens, reserved_output=4096, window=result["total"],
                         draft="compare them", overhead_per_message=5)
    assert tight["documents"][-1] == {"name": "notes.txt", "tokens": count_pretokens(
        '<document name="notes.txt">\nextra notes\n</document>'), "pending": True}
    assert not tight["fits"] and tight["overflow"] == tight["total"] - result["total"] > 0
    store.remove_attachment(alice, pending)
    assert store.budget(alice, sid, count_pretokens, 4096) == result


def test_concurrent_turns_from_threads(store):
    alice = store.ensure_user("alice")
    sessions = [store.create_session(alice)["id"] for _ in range(4)]
    workers = [threading.Thread(target=lambda s=s: [chat(store, alice, s, f"q{i}", f"a{i}") for i in range(10)])
               for s in sessions]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(len(store.active_path(alice, s)) == 20 for s in sessions)
