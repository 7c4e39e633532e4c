"""Split M1's generated text into reasoning, content and tool calls, while it streams.

M1 calls tools after its think block by writing
    <tool_calls>
    {"name": "get_weather", "arguments": {"location": "Paris"}}
    </tool_calls>
with one JSON object per line (several calls allowed, text may come before). `OutputParser` runs the reasoning
splitter first (so a `<tool_calls>` inside `<think>` stays reasoning) and `ToolCallParser` on the answer: tags and
JSON may be cut across deltas at any character; a line that is not a call (bad JSON, no name, a tool that is not
offered, a second call when parallel calls are off) is kept as content; a block with no call at all is content
verbatim. Nothing here raises on the model's text.
"""
import json
from typing import NamedTuple

from .reasoning import ReasoningSplitter, _partial_suffix

OPEN_TAG, CLOSE_TAG = "<tool_calls>", "</tool_calls>"


class ToolCall(NamedTuple):
    """One parsed call: its position among the calls of the output, the tool name and the arguments as JSON text."""
    index: int
    name: str
    arguments: str


class OutputEvent(NamedTuple):
    """kind: "reasoning" | "content" (text) or "tool_call" (call)."""
    kind: str
    text: str = ""
    call: ToolCall | None = None


class ToolCallParser:
    """Feed answer text (think block removed), get content and tool_call events."""

    def __init__(self, tool_names=None, parallel: bool = True):
        self.tool_names = None if tool_names is None else set(tool_names)
        self.parallel = parallel
        self.calls: list[ToolCall] = []
        self._content: list[str] = []
        self._pending = ""
        self._in_block = self._after_block = False
        self._partial = ""  # lines of a call whose JSON is not complete yet
        self._block_raw, self._block_calls, self._rejected = "", 0, []

    @property
    def content_text(self) -> str:
        """All content emitted so far."""
        return "".join(self._content)

    def feed(self, delta: str) -> list[OutputEvent]:
        """Add answer text; return the events it completes (a possible tag start or open line is held back)."""
        self._pending += delta
        events: list[OutputEvent] = []
        while self._pending and (self._step_block(events) if self._in_block else self._step_text(events)):
            pass
        return events

    def finish(self) -> list[OutputEvent]:
        """End of output: an unclosed block is closed here (its last line parsed), held-back text is emitted."""
        events: list[OutputEvent] = []
        if self._in_block:
            self._block_raw += self._pending
            self._line(self._pending, events)
            self._close_block(events, closed=False)
        else:
            self._emit_text(events, self._pending)
        self._pending = ""
        return events

    def _step_text(self, events: list[OutputEvent]) -> bool:
        if self._after_block:  # the newline after a closing tag belongs to the tag
            self._pending, self._after_block = self._pending.removeprefix("\n"), False
        at = self._pending.find(OPEN_TAG)
        if at >= 0:
            self._emit_text(events, self._pending[:at].rstrip("\n") if at else "")
            self._pending = self._pending[at + len(OPEN_TAG):]
            self._in_block, self._block_raw, self._block_calls, self._rejected = True, "", 0, []
            return True
        keep = _partial_suffix(self._pending, OPEN_TAG)
        body = self._pending[:len(self._pending) - keep]
        held = len(body) - len(body.rstrip("\n"))  # newlines right before a tag belong to the tag
        self._emit_text(events, body[:len(body) - held])
        self._pending = self._pending[len(body) - held:]
        return False

    def _step_block(self, events: list[OutputEvent]) -> bool:
        close = self._pending.find(CLOSE_TAG)
        newline = self._pending.find("\n")
        if newline >= 0 and (close < 0 or newline < close):
            line, self._pending = self._pending[:newline], self._pending[newline + 1:]
            self._block_raw += line + "\n"
            self._line(line, events)
            return True
        if close >= 0:
            line, self._pending = self._pending[:close], self._pending[close + len(CLOSE_TAG):]
            self._block_raw += line
            self._line(line, events)
            self._close_block(events, closed=True)
            self._after_block = True
            return True
        return False

    def _line(self, line: str, events: list[OutputEvent]) -> None:
        text = self._partial + line
        if not text.strip():
            return
        if _incomplete_json(text):  # a call whose JSON goes on over the next line
            self._partial = text + "\n"
            return
        self._partial = ""
        call = parse_call(text, self.tool_names)
        if call is None or (self.calls and not self.parallel):
            self._rejected.append(text)
            return
        name, arguments = call
        self.calls.append(ToolCall(len(self.calls), name, arguments))
        self._block_calls += 1
        events.append(OutputEvent("tool_call", call=self.calls[-1]))

    def _close_block(self, events: list[OutputEvent], closed: bool) -> None:
        if self._partial.strip():
            self._rejected.append(self._partial.rstrip("\n"))
        self._in_block, self._partial = False, ""
        if not self._block_calls:
            self._emit_text(events, OPEN_TAG + self._block_raw + (CLOSE_TAG if closed else ""))
        elif self._rejected:
            self._emit_text(events, "\n".join(self._rejected))

    def _emit_text(self, events: list[OutputEvent], text: str) -> None:
        if not text:
            return
        self._content.append(text)
        if events and events[-1].kind == "content":
            events[-1] = OutputEvent("content", events[-1].text + text)
        else:
            events.append(OutputEvent("content", text))


class OutputParser:
    """Reasoning splitter, then the tool-call parser on the answer: reasoning / content / tool_call events."""

    def __init__(self, starts_in_reasoning: bool = False, tool_names=None, parallel: bool = True,
                 parse_tools: bool = True):
        self.splitter = ReasoningSplitter(starts_in_reasoning)
        self.tools = ToolCallParser(tool_names, parallel) if parse_tools else None

    @property
    def in_reasoning(self) -> bool:
        return self.splitter.in_reasoning

    @property
    def calls(self) -> list[ToolCall]:
        return self.tools.calls if self.tools else []

    def feed(self, delta: str) -> list[OutputEvent]:
        return self._route(self.splitter.feed(delta), final=False)

    def finish(self) -> list[OutputEvent]:
        return self._route(self.splitter.finish(), final=True)

    def _route(self, pieces, final: bool) -> list[OutputEvent]:
        events = []
        for kind, text in pieces:
            if kind == "reasoning":
                events.append(OutputEvent("reasoning", text))
            elif self.tools is None:
                events.append(OutputEvent("content", text))
            else:
                events += self.tools.feed(text)
        if final and self.tools is not None:
            events += self.tools.finish()
        return events


def parse_call(line: str, tool_names=None) -> tuple[str, str] | None:
    """(name, arguments as JSON text) of one call line, or None when the line is not a call to an offered tool."""
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not data["name"]:
        return None
    if tool_names is not None and data["name"] not in tool_names:
        return None
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return data["name"], json.dumps(arguments, ensure_ascii=False)


def _incomplete_json(text: str) -> bool:
    """Whether text is the start of a JSON object that more text could complete (not yet valid, not yet wrong)."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return False
    try:
        json.loads(stripped)
    except json.JSONDecodeError as exc:
        return exc.pos >= len(stripped)
    except RecursionError:
        return False
    return False


def parse(text: str, starts_in_reasoning: bool = False, tool_names=None, parallel: bool = True):
    """Non-streaming: (reasoning, content, calls) of a whole generation."""
    parser = OutputParser(starts_in_reasoning, tool_names, parallel)
    events = parser.feed(text) + parser.finish()
    reasoning = "".join(e.text for e in events if e.kind == "reasoning")
    content = "".join(e.text for e in events if e.kind == "content")
    return reasoning, content, parser.calls
