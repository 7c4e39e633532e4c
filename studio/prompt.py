"""Prompt ids of the next chat turn and the window check that refuses a turn that cannot fit.

`PromptEncoder` encodes exactly as the tokenizer's encode_chat, but remembers the ids of long pieces (earlier
turns, documents) so a follow-up turn in a long session only tokenizes its new text.

The texts come from the session store (studio.store.prompt: history, documents inlined in the user message of
their turn); this module adds the turn being sent (before it is stored), encodes with the engine's chat format
and appends the forced "<think>\\n" with its keep point.
"""
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from engine.text import chat_format
from studio.generation import THINK_START
from studio.store.prompt import document_block


class ContextOverflow(ValueError):
    """The turn does not fit the context window; `overflow` is by how many tokens."""

    def __init__(self, message: str, overflow: int):
        super().__init__(message)
        self.overflow = overflow


@dataclass
class Prompt:
    """Token ids to send, the keep points for the engine, and the message dicts they encode."""
    ids: list[int]
    keep_at: list[int]
    messages: list[dict]


class PromptEncoder:
    """tokenizer.encode_chat / encode with a memo for long text pieces (LRU, bounded in tokens)."""

    MIN_CHARS = 4096

    def __init__(self, tokenizer, max_tokens: int = 8_000_000):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self._memo: OrderedDict[tuple[int, int], array] = OrderedDict()
        self._held = 0

    def encode(self, text: str) -> list[int]:
        """tokenizer.encode(text), from the memo when this long text was encoded before."""
        if len(text) < self.MIN_CHARS:
            return self.tokenizer.encode(text)
        key = (len(text), hash(text))
        ids = self._memo.get(key)
        if ids is None:
            ids = self._memo[key] = array("i", self.tokenizer.encode(text))
            self._held += len(ids)
            while self._held > self.max_tokens and len(self._memo) > 1:
                self._held -= len(self._memo.popitem(last=False)[1])
        self._memo.move_to_end(key)
        return ids.tolist()

    def encode_chat(self, messages: list[dict], tools=None) -> list[int]:
        """Same ids as tokenizer.encode_chat(messages, tools) with the generation prompt."""
        ids = []
        for text, is_marker in chat_format.segments(messages, tools):
            ids.extend([self.tokenizer.token_id(text)] if is_marker else self.encode(text))
        return ids


def user_content(documents: list[tuple[str, str]], text: str) -> str:
    """A user message as the store replays it: each (name, text) document block, then the text, newline-joined."""
    pieces = [document_block(name, body) for name, body in documents] + ([text] if text else [])
    return "\n".join(pieces)


def encode(tokenizer, messages: list[dict], force_think_start: bool, tools=None) -> Prompt:
    """Encode messages with the generation prompt; with force_think_start append "<think>\\n" and keep the state
    right before it (the point the next turn's prompt shares). `tools`: offered to the model (chat_format)."""
    ids = tokenizer.encode_chat(messages, tools=tools) if tools else tokenizer.encode_chat(messages)
    if not force_think_start:
        return Prompt(ids, [], messages)
    return Prompt(ids + tokenizer.encode(THINK_START), [len(ids)], messages)


def check_fits(prompt_tokens: int, max_tokens: int, window: int) -> None:
    """Raise ContextOverflow when the prompt plus the reserved output exceeds the window, saying by how much."""
    total = prompt_tokens + max_tokens
    if total > window:
        over = total - window
        raise ContextOverflow(
            f"This turn does not fit the context window: the prompt is {prompt_tokens:,} tokens and "
            f"{max_tokens:,} are reserved for the reply (max tokens), {total:,} in all against a window of "
            f"{window:,}: over by {over:,} tokens. Remove a document, shorten the message or the history "
            f"(start a new chat), or lower max tokens.", over)
