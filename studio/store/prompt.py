"""The prompt side of SessionStore: the active path as OpenAI-style messages, and the token budget of exactly
those texts against the context window (a mixin; uses the store's `_rows`, `get_session`, `active_path`).

A user message's content is its documents' blocks, then its text, joined by single newlines; an assistant
message is its answer, or `<think>\\n{reasoning}\\n</think>\\n{answer}` when the session replays thinking.
"""
import json
from collections.abc import Callable

from studio.store.budget import DEFAULT_WINDOW, summarize


def document_block(name: str, text: str) -> str:
    """The exact text one attached document contributes to its user message."""
    return f'<document name="{name}">\n{text}\n</document>'


def assistant_text(content: str, reasoning: str, replay_thinking: bool) -> str:
    """What an earlier assistant turn replays to the model: the answer, with its thinking if replay is on."""
    return f"<think>\n{reasoning}\n</think>\n{content}" if replay_thinking and reasoning else content


def tool_message(content: str) -> dict:
    """A stored tool message (JSON [{"name", "result", ...}], see studio.tools.toolbox) as a chat message whose
    text parts carry the tool names M1's template writes; other content is one result of an unnamed tool."""
    try:
        results = json.loads(content)
    except json.JSONDecodeError:
        results = None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        results = [{"name": "tool", "result": content}]
    return {"role": "tool", "content": [{"type": "text", "name": str(r.get("name") or "tool"),
                                         "text": str(r.get("result", ""))} for r in results]}


class PromptBuilder:
    """prompt_messages and budget for SessionStore."""

    def prompt_messages(self, user_id: int, session_id: str, *, before: int | None = None,
                        replay_thinking: bool | None = None) -> list[dict]:
        """The active path as [{"role", "content"}] with the system prompt first, documents inlined.

        before: stop at this message of the active path (exclusive), e.g. the reply being generated.
        replay_thinking: override the session's switch for replaying earlier reasoning.
        """
        system, turns, _ = self._prompt_parts(user_id, session_id, before, replay_thinking)
        messages = [{"role": "system", "content": system}] if system else []
        for turn in turns:
            pieces = [block for _, block in turn["documents"]] + ([turn["text"]] if turn["text"] else [])
            messages.append(tool_message(turn["text"]) if turn["role"] == "tool" else
                            {"role": turn["role"], "content": "\n".join(pieces)})
        return messages

    def budget(self, user_id: int, session_id: str, count_tokens: Callable[[str], int], reserved_output: int,
               window: int = DEFAULT_WINDOW, *, draft: str = "", overhead_per_message: int = 0) -> dict:
        """Token budget of the next request: this session's prompt, plus the draft message and pending uploads.

        Counts use count_tokens over the same texts prompt_messages sends (cached per text), so with the engine's
        tokenizer they are exact; overhead_per_message (role markers of the chat template, known to the chat
        service) times the number of messages is reported as `template`. See store_budget.summarize for keys.
        """
        system, turns, pending = self._prompt_parts(user_id, session_id, None, None)
        if draft or pending:
            turns.append({"role": "user", "documents": pending, "text": draft, "pending": True})
        count = self._counts.count
        documents, history, joins = [], 0, 0
        for turn in turns:
            for name, block in turn["documents"]:
                documents.append({"name": name, "tokens": count(count_tokens, block), "pending": turn["pending"]})
            history += count(count_tokens, turn["text"])
            joins += max(0, len(turn["documents"]) + bool(turn["text"]) - 1)
        template = overhead_per_message * (len(turns) + bool(system)) + joins * count(count_tokens, "\n")
        return summarize(system=count(count_tokens, system), documents=documents, history=history,
                         template=template, reserved_output=reserved_output, window=window)

    def _prompt_parts(self, user_id: int, session_id: str, before: int | None, replay_thinking: bool | None):
        """(system, turns [{role, documents [(name, block)], text, pending}], pending documents)."""
        session = self.get_session(user_id, session_id)
        replay = session["replay_thinking"] if replay_thinking is None else replay_thinking
        path = self.active_path(user_id, session_id)
        if before is not None:
            ids = [message["id"] for message in path]
            if before not in ids:
                raise ValueError(f"message {before} is not on the active path of session {session_id!r}")
            path = path[:ids.index(before)]
        blocks: dict[int | None, list] = {}
        for row in self._rows("SELECT message_id, original_name, text FROM attachments WHERE session_id = ? "
                              "ORDER BY id", session_id):
            blocks.setdefault(row["message_id"], []).append((row["original_name"],
                                                             document_block(row["original_name"], row["text"])))
        turns = [{"role": m["role"], "documents": blocks.get(m["id"], []) if m["role"] == "user" else [],
                  "text": assistant_text(m["content"], m["reasoning"], replay) if m["role"] == "assistant"
                  else m["content"], "pending": False} for m in path]
        return session["system_prompt"], turns, blocks.get(None, [])
