"""The message tree of the real SQLite store (studio/store/messages.py), pinned down where mutation testing found it
loose: titles from the first message, statuses and their errors, interrupted replies, tool children, selection."""
from types import SimpleNamespace

import pytest

from studio.store.messages import INTERRUPTED, TITLE_CHARS
from studio.store.store import DEFAULT_TITLE, NotFound, SessionStore


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


@pytest.fixture
def alice(store):
    return store.ensure_user("alice")


def test_the_first_message_names_the_session_by_its_first_line_cut_to_sixty_characters(store, alice):
    short = store.create_session(alice)["id"]
    store.add_turn(alice, short, "  \n  Plan the trip  \nwith details")
    assert store.get_session(alice, short)["title"] == "Plan the trip"
    store.add_turn(alice, short, "a later question")
    lines = store.create_session(alice)["id"]
    store.add_turn(alice, lines, "Plan the trip\nday one\nday two")
    assert store.get_session(alice, lines)["title"] == "Plan the trip"
    assert store.get_session(alice, short)["title"] == "Plan the trip"
    exact, long = store.create_session(alice)["id"], store.create_session(alice)["id"]
    store.add_turn(alice, exact, "x" * TITLE_CHARS)
    store.add_turn(alice, long, "word " * 30)
    assert store.get_session(alice, exact)["title"] == "x" * 60
    assert store.get_session(alice, long)["title"] == ("word " * 12).rstrip() + "…"
    spaced = store.create_session(alice)["id"]
    store.add_turn(alice, spaced, "a" * 58 + " and more words after the cut")
    assert store.get_session(alice, spaced)["title"] == "a" * 58 + "…"  # no space before the ellipsis
    blank, named = store.create_session(alice)["id"], store.create_session(alice, "Mine")["id"]
    store.add_turn(alice, blank, "   ")
    store.add_turn(alice, named, "Something else")
    assert (store.get_session(alice, blank)["title"], store.get_session(alice, named)["title"]) == \
        (DEFAULT_TITLE, "Mine")


def test_statuses_are_checked_and_named(store, alice):
    sid = store.create_session(alice)["id"]
    user_msg, reply = store.add_turn(alice, sid, "q", status="done")
    assert [m["status"] for m in store.active_path(alice, sid)] == ["done", "done"]
    with pytest.raises(ValueError, match=r"^status 'paused' is not one of streaming, done, stopped, error, "
                                         r"interrupted$"):
        store.update_message(alice, reply, status="paused")
    for status in ("stopped", "error", "interrupted", "streaming"):
        store.update_message(alice, reply, status=status)
        assert store.get_message(alice, reply)["status"] == status
    with pytest.raises(ValueError, match=r"^message \d+ is an assistant message; edit a user message$"):
        store.edit_turn(alice, reply, "edited")
    with pytest.raises(NotFound, match=r"^message 9999 not found$"):
        store.get_message(alice, 9999)
    with pytest.raises(ValueError, match=r"^status 'paused' is not one of streaming, done, stopped, error, "
                                         r"interrupted$"):
        store.add_turn(alice, sid, "q", status="paused")
    with pytest.raises(NotFound, match=r"^session 'gone' not found$"):
        store.add_turn(alice, "gone", "q")


def test_update_message_writes_only_the_given_fields_and_bumps_the_session(store, alice):
    sid = store.create_session(alice)["id"]
    _, reply = store.add_turn(alice, sid, "q")
    store.update_message(alice, reply, content="answer", reasoning="why", stats={"tokens": 3}, status="done")
    before = store.get_session(alice, sid)["updated_at"]
    store.update_message(alice, reply, stats={"tokens": 4})
    message = store.get_message(alice, reply)
    assert (message["content"], message["reasoning"], message["stats"], message["status"]) == \
        ("answer", "why", {"tokens": 4}, "done")
    store.update_message(alice, reply)  # nothing to write: only the session's time moves
    assert store.get_session(alice, sid)["updated_at"] > before
    store.update_message(alice, reply, content="answer, revised")
    assert store.get_message(alice, reply)["stats"] == {"tokens": 4}


def test_replies_left_streaming_are_marked_interrupted_with_their_text_kept(store, alice):
    sid = store.create_session(alice)["id"]
    _, streaming = store.add_turn(alice, sid, "q1")
    store.update_message(alice, streaming, content="half an ans", stats={"tokens": 3})
    _, finished = store.add_turn(alice, sid, "q2", status="done")
    assert store.mark_interrupted() == 1 and store.mark_interrupted() == 0
    cut = store.get_message(alice, streaming)
    assert (cut["status"], cut["content"], cut["stats"]) == ("interrupted", "half an ans",
                                                             {"tokens": 3, "error": INTERRUPTED})
    assert store.get_message(alice, finished)["status"] == "done"


def test_a_tool_child_continues_the_active_path(store, alice):
    sid = store.create_session(alice)["id"]
    user_msg, call = store.add_turn(alice, sid, "weather?", status="done")
    tool = store.add_child(alice, call, "tool", '[{"name": "weather", "result": "sunny"}]')
    answer = store.add_child(alice, tool, "assistant", "", status="streaming")
    path = store.active_path(alice, sid)
    assert [(m["id"], m["role"], m["status"], m["parent_id"]) for m in path] == [
        (user_msg, "user", "done", None), (call, "assistant", "done", user_msg), (tool, "tool", "done", call),
        (answer, "assistant", "streaming", tool)]
    assert all(m["selected"] is True for m in path)


def test_siblings_and_selection_of_the_first_message(store, alice):
    sid = store.create_session(alice)["id"]
    first, _ = store.add_turn(alice, sid, "v1")
    second, reply = store.edit_turn(alice, first, "v2")
    assert [(m["id"], m["selected"], m["sibling_index"], m["sibling_count"]) for m in store.siblings(alice, first)] \
        == [(first, False, 1, 2), (second, True, 2, 2)]
    assert [m["content"] for m in store.select_message(alice, first)] == ["v1", ""]
    assert [(m["content"], m["selected"]) for m in store.all_messages(alice, sid)] == \
        [("v1", True), ("", True), ("v2", False), ("", True)]  # each parent keeps one selected child


def doc(name):
    return SimpleNamespace(name=name, kind="text", text=f"text of {name}", num_tokens=4, num_bytes=12,
                           tokens_estimated=False)


def test_an_edit_keeps_the_documents_of_the_version_it_replaces_and_adds_new_ones(store, alice):
    sid = store.create_session(alice)["id"]
    a, b = store.add_attachment(alice, sid, doc("a.txt")), store.add_attachment(alice, sid, doc("b.txt"))
    first, _ = store.add_turn(alice, sid, "compare", attachment_ids=[a, b])
    c = store.add_attachment(alice, sid, doc("c.txt"))
    edited, reply = store.edit_turn(alice, first, "compare all three", attachment_ids=[c])
    assert [(x["name"], x["message_id"]) for x in store.attachments(alice, sid)] == [
        ("a.txt", first), ("b.txt", first), ("c.txt", edited), ("a.txt", edited), ("b.txt", edited)]
    assert store.prompt_messages(alice, sid, before=reply)[0]["content"] == "\n".join(
        [f'<document name="{n}">\ntext of {n}\n</document>' for n in ("c.txt", "a.txt", "b.txt")] +
        ["compare all three"])


def test_regenerate_adds_a_selected_sibling_under_the_same_parent(store, alice):
    sid = store.create_session(alice)["id"]
    user_msg, old = store.add_turn(alice, sid, "q", status="done")
    new = store.regenerate(alice, old, status="done")
    fresh = store.get_message(alice, new)
    assert (fresh["parent_id"], fresh["role"], fresh["content"], fresh["selected"]) == (user_msg, "assistant", "",
                                                                                      True)
    assert store.get_message(alice, old)["selected"] is False
    assert [m["id"] for m in store.active_path(alice, sid)] == [user_msg, new]
    with pytest.raises(NotFound, match=r"^message 4242 not found$"):
        store.regenerate(alice, 4242)


def test_a_tool_result_is_sent_as_a_tool_message_with_named_parts(store, alice):
    sid = store.create_session(alice)["id"]
    _, call = store.add_turn(alice, sid, "weather?", status="done")
    store.add_child(alice, call, "tool", '[{"name": "weather", "result": "sunny"}]')
    assert store.prompt_messages(alice, sid)[-1] == {"role": "tool", "content": [
        {"type": "text", "name": "weather", "text": "sunny"}]}


@pytest.mark.parametrize("content,parts", [
    ("plain text", [("tool", "plain text")]),
    ("[1, 2]", [("tool", "[1, 2]")]),
    ('[{"result": "x"}]', [("tool", "x")]),
    ('[{"name": "n"}]', [("n", "")]),
], ids=["not-json", "not-objects", "no-name", "no-result"])
def test_other_tool_content_is_one_result_of_an_unnamed_tool(store, alice, content, parts):
    sid = store.create_session(alice)["id"]
    _, call = store.add_turn(alice, sid, "go", status="done")
    store.add_child(alice, call, "tool", content)
    assert store.prompt_messages(alice, sid)[-1] == {"role": "tool", "content": [
        {"type": "text", "name": name, "text": text} for name, text in parts]}
