"""Chat service on the real tiny engine: turns with documents and state reuse, thinking budget, answer now, stop,
regenerate/edit branches, window refusal, persistence across a restart of the store."""
import asyncio

import pytest

from engine.serving.async_engine import AsyncEngine
from engine.serving.llm_engine import EngineArgs, LLMEngine
from studio.chat import ChatService, ChatSettings
from studio.store.store import SessionStore

WINDOW = 4096
DOC = "Quarterly report. Revenue grew by 12 percent while costs stayed flat. " * 20


@pytest.fixture(scope="module")
def engine(tiny_official):
    engine = AsyncEngine(LLMEngine(str(tiny_official), device="cpu", dtype="float32",
                                   args=EngineArgs(max_model_len=WINDOW, prefill_chunk_size=256,
                                                   max_num_batched_tokens=256)))
    yield engine
    engine.shutdown()


@pytest.fixture
def chat(engine, tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield ChatService(engine, store)
    store.close()


def settings(**kw) -> ChatSettings:
    return ChatSettings(**{"temperature": 1.0, "seed": 0, "max_tokens": 24, **kw})


def collect(agen, on_event=None) -> list:
    async def main():
        events = []
        async for event in agen:
            events.append(event)
            if on_event is not None:
                on_event(event, events)
        return events
    return asyncio.run(main())


def texts(events, kind) -> str:
    return "".join(e.text for e in events if e.kind == kind)


def new_session(chat, name="alice"):
    uid = chat.store.ensure_user(name)
    sid = chat.store.create_session(uid)["id"]
    chat.save_settings(uid, sid, settings())
    return uid, sid


def test_three_turns_with_a_document_reuse_state_and_save_each_turn(chat, engine):
    uid, sid = new_session(chat)
    doc = chat.attach(uid, sid, DOC.encode(), original_name="report.txt")
    assert doc["message_id"] is None and doc["num_tokens"] == engine.tokenizer.count_tokens(DOC)
    finals, think = [], len(engine.tokenizer.encode("<think>\n"))
    for turn, question in enumerate(["Summarise the report.", "And the costs?", "Thanks!"]):
        events = collect(chat.send(uid, sid, question, settings=settings(seed=turn)))
        kinds = [e.kind for e in events]
        assert kinds[0] == "started" and kinds[-1] == "done" and "reasoning" in kinds, kinds
        final = events[-1]
        saved = chat.store.get_message(uid, final.message_id)
        assert saved["status"] == "done" and saved["reasoning"] == texts(events, "reasoning")
        assert saved["content"] == texts(events, "answer") and saved["stats"]["ttft"] > 0
        finals.append(final.stats)
        if turn == 0:  # ~640 prompt tokens read in 256-token chunks
            progress = [e for e in events if e.kind == "prefill"]
            assert [e.done for e in progress] == sorted(e.done for e in progress) and len(progress) >= 3
            assert progress[-1].done == progress[-1].total == final.stats["prompt_tokens"]
            assert progress[1].eta_s is not None and progress[1].eta_s > 0
    first, second, third = finals
    assert first["cached_tokens"] == 0
    assert second["cached_tokens"] == first["prompt_tokens"] - think  # restored up to turn 1's generation prompt
    assert third["cached_tokens"] == second["prompt_tokens"] - think
    messages = chat.store.prompt_messages(uid, sid)
    assert messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert messages[1]["content"].startswith('<document name="report.txt">\n' + DOC) and len(messages) == 7
    assert chat.store.attachments(uid, sid)[0]["message_id"] == chat.store.active_path(uid, sid)[0]["id"]
    for stats in finals:
        assert stats["reasoning_tokens"] + stats["answer_tokens"] == stats["completion_tokens"]
        assert stats["prompt_tokens"] > stats["cached_tokens"]
        assert stats["tokens_per_s"] > 0 and stats["ttft"] > 0  # a real rate: tokens were timed after the first


def test_thinking_budget_closes_the_think_block(chat):
    uid, sid = new_session(chat)
    events = collect(chat.send(uid, sid, "Think briefly.", settings=settings(thinking_budget=4, max_tokens=40)))
    stats = events[-1].stats
    assert stats["forced_close"] == "budget" and stats["reasoning_tokens"] == 4, stats  # the engine closes at the budget
    assert texts(events, "answer") and stats["answer_tokens"] > 0 and stats["thinking_seconds"] > 0
    saved = chat.store.get_message(uid, events[-1].message_id)
    assert "</think>" not in saved["reasoning"] + saved["content"]


def test_answer_now_ends_the_reasoning(chat):
    uid, sid = new_session(chat)

    def on_event(event, events):
        if event.kind == "reasoning" and len(events) < 8:
            chat.answer_now(events[0].request)

    events = collect(chat.send(uid, sid, "Take your time.", settings=settings(max_tokens=60)), on_event)
    assert events[-1].stats["forced_close"] == "answer_now" and texts(events, "answer")
    assert events[-1].stats["reasoning_tokens"] < 16


def test_stop_saves_exactly_what_was_streamed_and_frees_the_engine(chat, engine):
    uid, sid = new_session(chat)

    def on_event(event, events):
        if sum(e.kind in ("reasoning", "answer") for e in events) == 5:
            assert chat.stop(events[0].request)

    events = collect(chat.send(uid, sid, "Write a long essay.", settings=settings(max_tokens=2000)), on_event)
    final = events[-1]
    assert final.kind == "done" and final.status == "stopped" and final.stats["completion_tokens"] < 100
    saved = chat.store.get_message(uid, final.message_id)
    assert saved["status"] == "stopped" and saved["stats"]["status"] == "stopped"
    assert saved["reasoning"] == texts(events, "reasoning") and saved["content"] == texts(events, "answer")
    assert engine.call(lambda e: not e.has_unfinished) and chat.running() == []


def test_leaving_the_stream_saves_the_partial_reply(chat, engine):
    uid, sid = new_session(chat)

    async def main():
        agen = chat.send(uid, sid, "Go on.", settings=settings(max_tokens=2000))
        shown = ""
        async for event in agen:
            shown += event.text if event.kind in ("reasoning", "answer") else ""
            if len(shown) > 10:
                break
        await agen.aclose()
        return shown

    shown = asyncio.run(main())
    reply = chat.store.active_path(uid, sid)[-1]
    assert reply["status"] == "stopped" and reply["reasoning"] + reply["content"] == shown
    assert engine.call(lambda e: not e.has_unfinished)


def test_regenerate_and_edit_make_siblings(chat):
    uid, sid = new_session(chat)
    doc = chat.attach(uid, sid, DOC.encode(), original_name="a.md")
    first = collect(chat.send(uid, sid, "Question one", [doc["id"]], settings=settings()))[-1]
    again = collect(chat.regenerate(uid, first.message_id))
    think = len(chat.tokenizer.encode("<think>\n"))
    assert again[-1].kind == "done" and again[-1].stats["cached_tokens"] >= again[-1].stats["prompt_tokens"] - think
    versions = chat.store.siblings(uid, again[-1].message_id)
    assert [v["id"] for v in versions] == [first.message_id, again[-1].message_id]
    user_id = chat.store.active_path(uid, sid)[0]["id"]
    edited = collect(chat.edit_and_rerun(uid, user_id, "Question one, edited"))
    path = chat.store.active_path(uid, sid)
    assert edited[-1].kind == "done" and path[0]["content"] == "Question one, edited"
    assert path[0]["sibling_count"] == 2 and path[-1]["id"] == edited[-1].message_id
    assert '<document name="a.md">' in chat.store.prompt_messages(uid, sid)[1]["content"]  # documents kept


def test_a_turn_over_the_window_is_refused_before_anything_is_stored(chat):
    uid, sid = new_session(chat)
    chat.attach(uid, sid, (DOC * 4).encode(), original_name="big.txt")
    over = settings(max_tokens=3500)
    budget = chat.budget(uid, sid, draft="Summarise.", settings=over)
    events = collect(chat.send(uid, sid, "Summarise.", settings=over))
    assert [e.kind for e in events] == ["error"] and events[0].status == "refused"
    assert "over by" in events[0].text and chat.store.active_path(uid, sid) == []
    exact = int(events[0].text.split("over by ")[1].split(" ")[0].replace(",", ""))
    assert not budget["fits"] and abs(budget["overflow"] - exact) <= 8, (budget, exact)
    assert collect(chat.send(uid, sid, "Summarise.", settings=settings()))[-1].kind == "done"


def test_sessions_persist_across_a_restart(chat, engine, tmp_path):
    uid, sid = new_session(chat, "bob")
    chat.save_settings(uid, sid, settings(system_prompt="Be brief.", replay_thinking=True, thinking_budget=8))
    first = collect(chat.send(uid, sid, "Hello"))[-1]
    chat.store.close()
    reopened = ChatService(engine, SessionStore(tmp_path / "sessions.db"))
    restored = reopened.settings(uid, sid)
    assert restored.system_prompt == "Be brief." and restored.replay_thinking and restored.thinking_budget == 8
    saved = reopened.store.get_message(uid, first.message_id)
    assert saved["stats"]["completion_tokens"] == first.stats["completion_tokens"] and saved["reasoning"]
    _, orphan = reopened.store.add_turn(uid, sid, "Asked just before a crash")  # its reply never finished
    second = collect(reopened.send(uid, sid, "Again"))[-1]
    assert reopened.store.get_message(uid, orphan)["status"] == "interrupted"
    assert second.kind == "done" and second.stats["cached_tokens"] > 0
    replayed = reopened.store.prompt_messages(uid, sid)[2]["content"]
    assert reopened.recover_interrupted(uid, sid) == []
    assert replayed.startswith("<think>\n" + saved["reasoning"])  # the session replays earlier reasoning
    reopened.store.close()


def test_bad_settings_are_refused_with_the_setting_named(chat):
    uid, sid = new_session(chat)
    events = collect(chat.send(uid, sid, "hi", settings=settings(temperature=5)))
    assert events[0].kind == "error" and "temperature" in events[0].text


def test_prompt_encoder_matches_encode_chat_and_reuses_long_pieces(engine):
    from studio.prompt import PromptEncoder
    tok = engine.tokenizer
    encoder = PromptEncoder(tok, max_tokens=10_000)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": DOC * 8 + "Why?"},
                {"role": "assistant", "content": " An answer"}, {"role": "user", "content": "More <think> text"}]
    assert encoder.encode_chat(messages) == tok.encode_chat(messages) == encoder.encode_chat(messages)
    assert len(encoder._memo) == 1 and encoder._held > 1000


def test_another_users_chat_is_refused_without_naming_it(chat):
    alice, sid = new_session(chat, "alice")
    _, reply = chat.store.add_turn(alice, sid, "private")
    bob = chat.store.ensure_user("bob")
    for events in (collect(chat.send(bob, sid, "hi", settings=settings())),
                   collect(chat.regenerate(bob, reply, settings=settings()))):
        assert [e.kind for e in events] == ["error"] and "not found" in events[0].text
        assert sid not in events[0].text and str(reply) not in events[0].text
    assert [m["content"] for m in chat.store.all_messages(alice, sid)] == ["private", ""]


def test_isolated_attach_counts_exact_tokens_and_refuses_bombs(chat):
    from studio.documents.documents import DocumentError
    uid, sid = new_session(chat)
    isolated = asyncio.run(chat.attach_isolated(uid, sid, DOC.encode(), original_name="report.txt"))
    direct = chat.attach(uid, sid, DOC.encode(), original_name="again.txt")
    assert not isolated["tokens_estimated"] and isolated["num_tokens"] == direct["num_tokens"]
    with pytest.raises(DocumentError, match="nested deeper"):
        asyncio.run(chat.attach_isolated(uid, sid, b"[" * 5000, original_name="deep.json"))
    assert len(chat.store.attachments(uid, sid)) == 2
