"""The assistant reply in OpenAI's shape once tools are in play: `message.tool_calls` of a whole completion, and
streamed `delta.tool_calls` (the first chunk of a call carries its id and name, the next ones argument pieces)."""
from engine.text.tool_calls import OutputEvent, ToolCall, ToolCallParser
from studio.api_tools import ToolSettings, call_id

ARGUMENT_PIECE = 24


class ReplyParser:
    """Answer text in, OpenAI deltas out; `calls` are the tool calls found (with their ids)."""

    def __init__(self, settings: ToolSettings | None):
        on = settings is not None and settings.parse_calls
        self.parser = ToolCallParser(settings.names, settings.parallel) if on else None
        self.ids: list[str] = []
        self.content = ""

    def feed(self, text: str) -> list[dict]:
        """Deltas for a piece of answer text."""
        if self.parser is None:
            self.content += text
            return [{"content": text}] if text else []
        return self._deltas(self.parser.feed(text))

    def finish(self) -> list[dict]:
        """Deltas for what was held back at the end."""
        return self._deltas(self.parser.finish()) if self.parser is not None else []

    @property
    def calls(self) -> list[dict]:
        """message.tool_calls of the reply so far."""
        calls = self.parser.calls if self.parser is not None else []
        return [tool_call(call, self.ids[call.index]) for call in calls]

    def message(self, reasoning: str) -> dict:
        """The whole assistant message (after finish)."""
        calls = self.calls
        message = {"role": "assistant", "content": self.content or (None if calls else ""),
                   "reasoning_content": reasoning or None}
        return {**message, "tool_calls": calls} if calls else message

    def finish_reason(self, stats: dict) -> str:
        """tool_calls when the reply called tools, else length or stop."""
        if self.parser is not None and self.parser.calls:
            return "tool_calls"
        return "length" if stats.get("finish_reason") == "length" else "stop"

    def _deltas(self, events: list[OutputEvent]) -> list[dict]:
        out = []
        for event in events:
            if event.kind == "content":
                self.content += event.text
                out.append({"content": event.text})
            else:
                self.ids.append(call_id())
                out += call_deltas(event.call, self.ids[-1])
        return out


def tool_call(call: ToolCall, id_: str) -> dict:
    """One entry of message.tool_calls."""
    return {"id": id_, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def call_deltas(call: ToolCall, id_: str) -> list[dict]:
    """The streamed chunks of one call: id, type and name first (empty arguments), then the arguments in pieces."""
    first = {"index": call.index, "id": id_, "type": "function", "function": {"name": call.name, "arguments": ""}}
    pieces = [call.arguments[i:i + ARGUMENT_PIECE] for i in range(0, len(call.arguments), ARGUMENT_PIECE)]
    return [{"tool_calls": [first]}] + [{"tool_calls": [{"index": call.index, "function": {"arguments": p}}]}
                                        for p in pieces]
