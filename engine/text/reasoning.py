"""Split M1's generated text into reasoning and answer, while it streams (tool calls: engine/text/tool_calls.py).

M1 writes `<think>\\n...reasoning...\\n</think>\\n` and then the answer. The splitter removes the tags and the
single newline on each side of them that belongs to the tag, copes with tags cut across deltas at any character,
a missing open tag (`starts_in_reasoning=True` when the prompt already opened the block) and a close tag that
never comes (generation stopped inside the reasoning: `finish()` flushes it and `reasoning_unfinished` is True).
"""
from typing import NamedTuple

OPEN_TAG, CLOSE_TAG = "<think>", "</think>"
_CLOSE_WITH_NEWLINE = "\n" + CLOSE_TAG


class Event(NamedTuple):
    """One piece of output: kind is "reasoning" or "answer"."""
    kind: str
    text: str


class ReasoningSplitter:
    """Feed text deltas, get ("reasoning", text) / ("answer", text) events with the think tags removed."""

    def __init__(self, starts_in_reasoning: bool = False):
        self.starts_in_reasoning = starts_in_reasoning
        self._state = "start"  # start -> (open_newline -> reasoning -> close_newline)? -> answer
        self._pending = ""
        self._parts = {"reasoning": [], "answer": []}
        self.reasoning_unfinished = False

    @property
    def in_reasoning(self) -> bool:
        """Whether the text so far ends inside the reasoning block."""
        if self._state == "start":
            return self.starts_in_reasoning
        return self._state in ("open_newline", "reasoning")

    @property
    def reasoning_text(self) -> str:
        """All reasoning emitted so far (tags removed)."""
        return "".join(self._parts["reasoning"])

    @property
    def answer_text(self) -> str:
        """All answer text emitted so far."""
        return "".join(self._parts["answer"])

    def feed(self, delta: str) -> list[Event]:
        """Add generated text; return the events it completes (held-back text may be a tag's beginning)."""
        if not isinstance(delta, str):
            raise TypeError(f"feed expects str, got {type(delta).__name__}")
        self._pending += delta
        events: list[Event] = []
        while self._pending and self._step(events):
            pass
        return events

    def finish(self) -> list[Event]:
        """End of generation: flush held-back text. Stopping inside reasoning sets `reasoning_unfinished`."""
        events: list[Event] = []
        text, self._pending = self._pending, ""
        if self._state == "start":
            self._state = "reasoning" if self.starts_in_reasoning else "answer"
        if self._state in ("open_newline", "reasoning"):
            self.reasoning_unfinished = True
            self._emit(events, "reasoning", text)
        else:
            self._emit(events, "answer", text)
        return events

    def _step(self, events: list[Event]) -> bool:
        """Consume what the pending text decides; False when more text is needed."""
        return getattr(self, f"_step_{self._state}")(events)

    def _step_start(self, events: list[Event]) -> bool:
        stripped = self._pending.lstrip()
        if stripped.startswith(OPEN_TAG):
            self._pending = stripped[len(OPEN_TAG):]
            self._state = "open_newline"
            return True
        if not stripped or OPEN_TAG.startswith(stripped):
            return False
        self._state = "reasoning" if self.starts_in_reasoning else "answer"
        return True

    def _step_open_newline(self, events: list[Event]) -> bool:
        self._pending = self._pending.removeprefix("\n")
        self._state = "reasoning"
        return True

    def _step_reasoning(self, events: list[Event]) -> bool:
        end = self._pending.find(CLOSE_TAG)
        if end >= 0:
            self._emit(events, "reasoning", self._pending[:end].removesuffix("\n"))
            self._pending = self._pending[end + len(CLOSE_TAG):]
            self._state = "close_newline"
            return True
        keep = max(_partial_suffix(self._pending, _CLOSE_WITH_NEWLINE), _partial_suffix(self._pending, CLOSE_TAG))
        self._emit(events, "reasoning", self._pending[:len(self._pending) - keep])
        self._pending = self._pending[len(self._pending) - keep:]
        return False

    def _step_close_newline(self, events: list[Event]) -> bool:
        self._pending = self._pending.removeprefix("\n")
        self._state = "answer"
        return True

    def _step_answer(self, events: list[Event]) -> bool:
        self._emit(events, "answer", self._pending)
        self._pending = ""
        return False

    def _emit(self, events: list[Event], kind: str, text: str) -> None:
        if not text:
            return
        self._parts[kind].append(text)
        if events and events[-1].kind == kind:
            events[-1] = Event(kind, events[-1].text + text)
        else:
            events.append(Event(kind, text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag (text that may become the tag)."""
    for size in range(min(len(text), len(tag) - 1), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def split(text: str, starts_in_reasoning: bool = False) -> tuple[str, str]:
    """Non-streaming split of a whole generation into (reasoning, answer)."""
    splitter = ReasoningSplitter(starts_in_reasoning)
    splitter.feed(text)
    splitter.finish()
    return splitter.reasoning_text, splitter.answer_text
