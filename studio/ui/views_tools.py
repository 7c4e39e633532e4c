"""View functions for tool calls in the transcript: each call and each result as a collapsible block (a chatbot
message with a metadata title, like the reasoning panel), marked with the `m1-tool` CSS class.

A stored assistant message that called tools holds M1's `<tool_calls>` block in its content; a stored tool
message holds its results as JSON: [{"name", "arguments", "result"}] (studio.tools.toolbox.result_content).
"""
import html
import json

from engine.text.tool_calls import parse
from studio.ui.views import display_text

CALL_TITLE, RESULT_TITLE = "🔧 Called {name}", "📋 Result of {name}"
MAX_SHOWN_CHARS = 4000


def split_calls(content: str) -> tuple[str, list[dict]]:
    """An assistant message's text without its tool-call blocks, and the calls as [{"name", "arguments"}]."""
    if "<tool_calls>" not in content:
        return content, []
    _, text, calls = parse(content)
    return text, [{"name": c.name, "arguments": c.arguments} for c in calls]


def tool_block(title: str, kind: str, body: str) -> dict:
    """One collapsible block (closed); kind is "call" or "result"; body is shown as preformatted text."""
    shown = body if len(body) <= MAX_SHOWN_CHARS else body[:MAX_SHOWN_CHARS] + "…"
    content = f'<div class="m1-tool m1-tool-{kind}"><pre>{html.escape(shown)}</pre></div>'
    return {"role": "assistant", "content": content, "metadata": {"title": title, "status": "done"}}


def call_rows(calls: list[dict]) -> list[dict]:
    """Blocks for the calls of an assistant message."""
    return [tool_block(CALL_TITLE.format(name=c["name"]), "call", _pretty(c["arguments"])) for c in calls]


def result_rows(content: str) -> list[dict]:
    """Blocks for a stored tool message (its JSON results; other text is shown as one result)."""
    try:
        results = json.loads(content)
    except json.JSONDecodeError:
        results = None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        return [tool_block(RESULT_TITLE.format(name="a tool"), "result", content)]
    return [tool_block(RESULT_TITLE.format(name=r.get("name", "a tool")), "result", str(r.get("result", "")))
            for r in results]


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return arguments


def message_rows(message: dict, show_reasoning: bool) -> list[dict]:
    """Chatbot rows of a stored tool message, or of an assistant message whose content calls tools."""
    from studio.ui.views import REASONING_INLINE_CHARS, answer_messages
    if message["role"] == "tool":
        return result_rows(message["content"])
    if message["role"] != "assistant":
        return [{"role": message["role"], "content": display_text(message["content"])}]
    text, calls = split_calls(message["content"])
    inline = show_reasoning or len(message["reasoning"]) <= REASONING_INLINE_CHARS
    rows = answer_messages(text, message["reasoning"], message["stats"], message["status"], include_reasoning=inline)
    stats = [r for r in rows if (r.get("metadata") or {}).get("title", "").startswith("⏱")]
    return [r for r in rows if r not in stats] + call_rows(calls) + stats
