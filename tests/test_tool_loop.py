"""The studio's built-in tool loop on the real tiny engine and store: the model's replies (forced through the
engine's force-tokens path, since the weights are random) call the calculator and the document search, the studio
runs them, stores the results as a tool message, the model answers in a new reply; the step limit ends a loop that
never answers; the transcript shows the calls and results as collapsible blocks."""
import asyncio
import json

import pytest

from engine.serving.async_engine import AsyncEngine
from engine.serving.llm_engine import EngineArgs, LLMEngine
from studio.chat import ChatService, ChatSettings
from studio.store.store import SessionStore
from studio.tools.toolbox import ToolBox
from studio.ui import views

DOC = "--- Page 1 ---\nIntro.\n\n--- Page 2 ---\nRevenue grew by 12 percent in 2024."
CALLS = ('\n</think>\n<tool_calls>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n'
         '{"name": "search_documents", "arguments": {"query": "revenue"}}\n</tool_calls>')
ANSWER = "\n</think>\nIt is 42, and revenue grew 12 percent."


@pytest.fixture(scope="module")
def engine(tiny_official):
    engine = AsyncEngine(LLMEngine(str(tiny_official), device="cpu", dtype="float32",
                                   args=EngineArgs(max_model_len=4096)))
    yield engine
    engine.shutdown()


def run_turn(chat, engine, uid, sid, replies):
    """Send a message; force the next scripted reply into each round of the loop as it starts."""
    eos = min(engine.tokenizer.eos_token_ids)
    script = [engine.tokenizer.encode(text) + [eos] for text in replies]

    async def main():
        events, rid = [], None
        async for event in chat.send(uid, sid, "What is 6 * 7, and how did revenue do?"):
            events.append(event)
            if event.kind == "started":
                rid = event.request.request_id
            elif rid is not None and event.kind in ("prefill", "reasoning", "answer"):
                engine.force_tokens(rid, script.pop(0) if script else [eos])
                rid = None
        return events
    return asyncio.run(main())


@pytest.fixture
def session(engine, tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    chat = ChatService(engine, store, toolbox=ToolBox(["calculator", "documents"]), max_tool_steps=2)
    uid = store.ensure_user("alice")
    sid = store.create_session(uid)["id"]
    chat.save_settings(uid, sid, ChatSettings(seed=0, max_tokens=200))
    chat.attach(uid, sid, DOC.encode(), original_name="report.txt")
    yield chat, uid, sid
    store.close()


def test_calls_run_and_the_model_answers(session, engine):
    chat, uid, sid = session
    events = run_turn(chat, engine, uid, sid, [CALLS, ANSWER])
    assert events[-1].kind == "done" and events[-1].status == "done"
    lines = [e.text for e in events if e.kind == "tool"]
    assert len(lines) == 2 and "→ 42" in lines[0] and "Page 2" in lines[1]
    path = chat.store.active_path(uid, sid)
    assert [m["role"] for m in path] == ["user", "assistant", "tool", "assistant"]
    results = json.loads(path[2]["content"])
    assert [r["name"] for r in results] == ["calculator", "search_documents"] and results[0]["result"] == "42"
    assert "[report.txt · Page 2]" in results[1]["result"]
    assert path[3]["content"] == "It is 42, and revenue grew 12 percent." and path[3]["status"] == "done"
    prompt = chat.store.prompt_messages(uid, sid)  # the results replay as M1's tool turn, with their names
    [tool] = [m for m in prompt if m["role"] == "tool"]
    assert [p["name"] for p in tool["content"]] == ["calculator", "search_documents"]
    rows, _ = views.transcript(path)
    titles = [(r.get("metadata") or {}).get("title", "") for r in rows]
    assert "🔧 Called calculator" in titles and "📋 Result of search_documents" in titles
    assert any("m1-tool-result" in r["content"] and "42" in r["content"] for r in rows)


def test_the_step_limit_ends_a_loop_that_never_answers(session, engine):
    chat, uid, sid = session
    events = run_turn(chat, engine, uid, sid, [CALLS, CALLS, CALLS, CALLS])
    assert events[-1].kind == "done" and len([e for e in events if e.kind == "tool"]) == 4  # 2 rounds of 2 calls
    roles = [m["role"] for m in chat.store.active_path(uid, sid)]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
