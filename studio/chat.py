"""ChatService: the one bridge from the studio to the engine — a session turn in, a stream of ChatEvents out.

    chat = ChatService(async_engine, store)
    async for event in chat.send(user_id, session_id, "Summarise it", attachment_ids=[doc_id]):
        if event.kind == "started": request = event.request          # keep it for stop / answer_now
        elif event.kind in ("reasoning", "answer"): show(event.kind, event.text)
        elif event.kind == "prefill": progress(event.done, event.total, event.eta_s)
        elif event.kind == "done": show_stats(event.stats)            # or "error": event.text says why
    chat.stop(request); chat.answer_now(request)                      # from another handler, any thread

Each turn is stored when it starts (the user message and an empty reply, status "streaming", one transaction),
its text saved while it streams (every PERSIST_EVERY_S or PERSIST_EVERY_TOKENS, so a crash keeps what was shown;
the next start marks such replies "interrupted") and saved when it ends (answer, reasoning, stats and status in one
transaction: done, stopped or error). A stop
keeps exactly what was streamed. Regenerate and edit create siblings (branches), never deletions. A turn that
cannot fit the window is refused before anything is stored, with a message saying by how many tokens.
"""
import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from engine.text.chat_format import ROLE_HEADERS
from studio.chat_settings import ChatSettings
from studio.documents.documents import DEFAULT_MAX_BYTES, check_fits as check_document_fits, iter_token_count, \
    read_document
from studio.documents.isolated import read_isolated
from studio.generation import THINK_START, ChatEvent, Generation
from studio.prompt import Prompt, PromptEncoder, check_fits, encode, user_content
from studio.store.store import INTERRUPTED, NotFound
from studio.store.budget import summarize
from studio.tool_loop import ToolLoop
from studio.tools.toolbox import ToolBox

__all__ = ["ChatEvent", "ChatRequest", "ChatService", "ChatSettings"]
MAX_TOOL_STEPS = 4  # built-in tool rounds per turn before the model must answer
STORE_STATUS = {"done": "done", "length": "done", "stopped": "stopped", "error": "error"}
NOT_FOUND = "this chat or message was not found: it was deleted, or it belongs to another login"
PERSIST_EVERY_S = 1.0  # a streaming reply's text is written at most this long after it was shown...
PERSIST_EVERY_TOKENS = 256  # ...or after this many tokens, whichever comes first


@dataclass
class ChatRequest:
    """A reply being generated: give it (or its request_id) to ChatService.stop / answer_now."""
    request_id: str
    user_id: int
    session_id: str
    user_message_id: int
    message_id: int
    generation: Generation = field(repr=False)


class ChatService:
    """Chat turns of stored sessions on a shared AsyncEngine (many sessions may generate at once)."""

    def __init__(self, async_engine, store, *, window: int | None = None, toolbox=None,
                 max_tool_steps: int = MAX_TOOL_STEPS):
        self.engine = async_engine
        self.toolbox, self.max_tool_steps = toolbox or ToolBox(), max_tool_steps
        self.tokenizer = async_engine.tokenizer
        self.store = store
        self.window = window or async_engine.engine.max_model_len
        self._running: dict[str, ChatRequest] = {}
        self._encoder = PromptEncoder(self.tokenizer)
        tok = self.tokenizer
        # role header plus begin/end-of-sentence markers and the newline after each turn
        self._per_message = max(len(tok.encode(header)) for header in ROLE_HEADERS.values()) + 3
        self._fixed = 1 + len(tok.encode_chat([{"role": "user", "content": ""}])) - len(
            tok.encode_chat([{"role": "user", "content": ""}], add_generation_prompt=False)) + \
            len(tok.encode(THINK_START))  # begin-of-document, generation prompt, forced think tag
        if self.toolbox:  # the tools turn of the prompt
            empty = [{"role": "user", "content": ""}]
            self._fixed += len(tok.encode_chat(empty, tools=self.toolbox.specs)) - len(tok.encode_chat(empty))

    # --- settings, budget, documents ----------------------------------------------------------------------------
    def settings(self, user_id: int, session_id: str) -> ChatSettings:
        """The session's stored settings."""
        return ChatSettings.from_session(self.store.get_session(user_id, session_id))

    def save_settings(self, user_id: int, session_id: str, settings: ChatSettings) -> ChatSettings:
        """Validate and store the settings in the session (ValueError names a bad setting)."""
        settings.check()
        self.store.update_session(user_id, session_id, system_prompt=settings.system_prompt,
                                  settings=settings.to_json(), replay_thinking=settings.replay_thinking)
        return settings

    def budget(self, user_id: int, session_id: str, draft: str = "", settings: ChatSettings | None = None) -> dict:
        """Token budget of the next turn against the window: system, documents (per file, pending uploads
        included), history, template, reserved output (max tokens), total, remaining, fits, overflow.
        Within a few tokens of the exact count; `send` checks the exact one."""
        settings = settings or self.settings(user_id, session_id)
        b = self.store.budget(user_id, session_id, self.tokenizer.count_tokens, settings.max_tokens, self.window,
                              draft=draft, overhead_per_message=self._per_message)
        return summarize(system=b["system"], documents=b["documents"], history=b["history"],
                         template=b["template"] + self._fixed, reserved_output=settings.max_tokens,
                         window=self.window)

    def attach(self, user_id: int, session_id: str, source, *, original_name: str | None = None,
               max_bytes: int = DEFAULT_MAX_BYTES, progress=None) -> dict:
        """Read an upload (path or bytes), check it fits what is left of the window, store it as pending for the
        next turn; returns the attachment dict. Raises studio.documents.DocumentError (ContextOverflowError when
        it does not fit). Blocking: call it from a worker thread."""
        doc = read_document(source, original_name=original_name, max_bytes=max_bytes,
                            count_tokens=self.tokenizer.count_tokens, progress=progress)
        return self._store_document(user_id, session_id, doc)

    async def attach_isolated(self, user_id: int, session_id: str, source, *, original_name: str | None = None,
                              max_bytes: int = DEFAULT_MAX_BYTES, progress=None) -> dict:
        """attach for uploads from strangers: read in a child process with reading limits and a memory cap
        (studio.documents.isolated); cancelling this coroutine kills the reader. Tokens counted exactly after."""
        doc = await read_isolated(source, original_name=original_name, max_bytes=max_bytes, progress=progress)
        count = iter_token_count(doc.text, self.tokenizer.count_tokens)
        return await asyncio.to_thread(self._store_document, user_id, session_id, doc, count, progress)

    def _store_document(self, user_id: int, session_id: str, doc, count=None, progress=None) -> dict:
        if count is not None:  # exact token count of an isolated read (it estimated)
            while True:
                try:
                    done, total, stage = next(count)
                except StopIteration as end:
                    doc = replace(doc, num_tokens=end.value, tokens_estimated=False)
                    break
                if progress is not None:
                    progress(done, total, stage)
        check_document_fits(doc.num_tokens, self.budget(user_id, session_id)["remaining"], name=doc.name)
        attachment_id = self.store.add_attachment(user_id, session_id, doc)
        return next(a for a in self.store.attachments(user_id, session_id) if a["id"] == attachment_id)

    # --- turns --------------------------------------------------------------------------------------------------
    async def send(self, user_id: int, session_id: str, text: str, attachment_ids=None,
                   settings: ChatSettings | None = None) -> AsyncIterator[ChatEvent]:
        """A new user turn (with pending uploads: attachment_ids, or all of them when None) and its reply.
        Given settings are saved to the session first."""
        try:
            settings = self._settings_for(user_id, session_id, settings)
            documents = self._pending(user_id, session_id, attachment_ids)
            if not text.strip() and not documents:
                raise ValueError("the message is empty: type a message or attach a document")
            history = self.store.prompt_messages(user_id, session_id, replay_thinking=settings.replay_thinking)
            content = user_content([(d["name"], d["text"]) for d in documents], text)
            prompt = self._prompt(history + [{"role": "user", "content": content}], settings)
        except (ValueError, NotFound) as exc:
            yield ChatEvent("error", _reason(exc), status="refused")
            return
        user_msg, reply = self.store.add_turn(user_id, session_id, text, attachment_ids=[d["id"] for d in documents])
        async for event in self._generate(user_id, session_id, user_msg, reply, prompt, settings):
            yield event

    async def regenerate(self, user_id: int, message_id: int,
                         settings: ChatSettings | None = None) -> AsyncIterator[ChatEvent]:
        """A new reply to the same user message, stored as a sibling of assistant message `message_id`."""
        try:
            message = self._message(user_id, message_id, "assistant")
            session_id = message["session_id"]
            settings = self._settings_for(user_id, session_id, settings)
            self.store.select_message(user_id, message_id)
            history = self.store.prompt_messages(user_id, session_id, before=message_id,
                                                 replay_thinking=settings.replay_thinking)
            prompt = self._prompt(history, settings)
        except (ValueError, NotFound) as exc:
            yield ChatEvent("error", _reason(exc), status="refused")
            return
        reply = self.store.regenerate(user_id, message_id)
        async for event in self._generate(user_id, session_id, message["parent_id"], reply, prompt, settings):
            yield event

    async def edit_and_rerun(self, user_id: int, message_id: int, text: str, attachment_ids=(),
                             settings: ChatSettings | None = None) -> AsyncIterator[ChatEvent]:
        """Edit user message `message_id` as a new sibling (its documents kept, plus attachment_ids) and reply."""
        try:
            message = self._message(user_id, message_id, "user")
            session_id = message["session_id"]
            settings = self._settings_for(user_id, session_id, settings)
            self.store.select_message(user_id, message_id)
            history = self.store.prompt_messages(user_id, session_id, before=message_id,
                                                 replay_thinking=settings.replay_thinking)
            kept = [a for a in self.store.attachments(user_id, session_id, with_text=True)
                    if a["message_id"] == message_id]
            documents = self._pending(user_id, session_id, list(attachment_ids)) + kept  # the store's id order
            if not text.strip() and not documents:
                raise ValueError("the message is empty: type a message or attach a document")
            content = user_content([(d["name"], d["text"]) for d in documents], text)
            prompt = self._prompt(history + [{"role": "user", "content": content}], settings)
        except (ValueError, NotFound) as exc:
            yield ChatEvent("error", _reason(exc), status="refused")
            return
        user_msg, reply = self.store.edit_turn(user_id, message_id, text, attachment_ids=attachment_ids)
        async for event in self._generate(user_id, session_id, user_msg, reply, prompt, settings):
            yield event

    def stop(self, request) -> bool:
        """Stop a running reply (a ChatRequest or its request_id); what was streamed is saved, status "stopped".
        False when it is not running (already finished)."""
        running = self._running.get(getattr(request, "request_id", request))
        if running is not None:
            running.generation.stop()
        return running is not None

    def answer_now(self, request) -> bool:
        """Close the think block of a running reply so the model answers now. False when it is not running."""
        running = self._running.get(getattr(request, "request_id", request))
        if running is not None:
            running.generation.answer_now()
        return running is not None

    def recover_interrupted(self, user_id: int, session_id: str) -> list[int]:
        """Mark replies left "streaming" by a server that stopped mid-reply "interrupted" (their text so far is
        kept); returns their ids. Called before each turn; app start-up marks them all (store.mark_interrupted)."""
        live = {r.message_id for r in self.running(session_id)}
        stale = [m["id"] for m in self.store.all_messages(user_id, session_id)
                 if m["status"] == "streaming" and m["id"] not in live]
        for message_id in stale:
            self.store.update_message(user_id, message_id, status="interrupted", stats={"error": INTERRUPTED})
        return stale

    def running(self, session_id: str | None = None) -> list[ChatRequest]:
        """Replies being generated now (of one session, or all)."""
        return [r for r in self._running.values() if session_id is None or r.session_id == session_id]

    # --- internals ----------------------------------------------------------------------------------------------
    def _settings_for(self, user_id: int, session_id: str, settings: ChatSettings | None) -> ChatSettings:
        if self.running(session_id):
            raise ValueError("a reply is still being generated in this session: stop it or wait for it to finish")
        self.recover_interrupted(user_id, session_id)
        if settings is None:
            return self.settings(user_id, session_id).check()
        return self.save_settings(user_id, session_id, settings)

    def _message(self, user_id: int, message_id: int, role: str) -> dict:
        message = self.store.get_message(user_id, message_id)
        if message["role"] != role:
            raise ValueError(f"message {message_id} is a {message['role']} message, expected a {role} message")
        return message

    def _pending(self, user_id: int, session_id: str, attachment_ids) -> list[dict]:
        pending = [a for a in self.store.attachments(user_id, session_id, with_text=True) if a["message_id"] is None]
        if attachment_ids is None:
            return pending
        missing = set(attachment_ids) - {a["id"] for a in pending}
        if missing:
            raise ValueError(f"attachment(s) {sorted(missing)} are not pending uploads of this session")
        return [a for a in pending if a["id"] in set(attachment_ids)]

    def _prompt(self, messages: list[dict], settings: ChatSettings) -> Prompt:
        prompt = encode(self._encoder, messages, settings.force_think_start, self.toolbox.specs or None)
        check_fits(len(prompt.ids), settings.max_tokens, self.window)
        return prompt

    async def _generate(self, user_id: int, session_id: str, user_msg: int, reply: int, prompt: Prompt,
                        settings: ChatSettings) -> AsyncIterator[ChatEvent]:
        """The reply; with built-in tools on, the studio's tool loop around it (studio.tool_loop)."""
        if not self.toolbox:
            async for event in self._generate_one(user_id, session_id, user_msg, reply, prompt, settings):
                yield event
            return
        async for event in ToolLoop(self, user_id, session_id, settings).run(user_msg, reply, prompt):
            yield event

    async def _generate_one(self, user_id: int, session_id: str, user_msg: int, reply: int, prompt: Prompt,
                            settings: ChatSettings) -> AsyncIterator[ChatEvent]:
        stored = self.store.prompt_messages(user_id, session_id, before=reply, replay_thinking=settings.replay_thinking)
        if stored != prompt.messages:  # never expected; the stored turn is what later turns replay
            prompt = encode(self._encoder, stored, settings.force_think_start, self.toolbox.specs or None)
        generation = Generation(self.engine, prompt.ids, settings.sampling_params(), keep_at=prompt.keep_at,
                                starts_in_reasoning=settings.force_think_start,
                                thinking_budget=settings.thinking_budget, lstrip_answer=True,
                                session_id=f"{user_id}:{session_id}")
        request = ChatRequest(generation.request_id, user_id, session_id, user_msg, reply, generation)
        self._running[request.request_id] = request
        events, saved, checkpoint = generation.events(), False, (time.monotonic(), 0)
        try:
            yield ChatEvent("started", request=request, message_id=reply)
            async for event in events:
                if event.kind in ("done", "error"):
                    event.message_id = reply
                    self._save(request, event.status, event.stats, event.text if event.kind == "error" else None)
                    saved = True
                elif event.kind in ("reasoning", "answer"):
                    checkpoint = self._checkpoint(request, checkpoint)
                yield event
        finally:
            self._running.pop(request.request_id, None)
            await events.aclose()
            if not saved:  # the consumer left (closed tab, cancelled task): keep what was streamed
                self._save(request, "stopped", generation.stopped_stats(), None)

    def _checkpoint(self, request: ChatRequest, last: tuple[float, int]) -> tuple[float, int]:
        """Write the streamed text so far (status stays "streaming") when the last write is old enough."""
        generation, now = request.generation, time.monotonic()
        if now - last[0] < PERSIST_EVERY_S and generation.completion_tokens - last[1] < PERSIST_EVERY_TOKENS:
            return last
        self.store.update_message(request.user_id, request.message_id, content=generation.answer,
                                  reasoning=generation.reasoning)
        return now, generation.completion_tokens

    def _save(self, request: ChatRequest, status: str, stats: dict, error: str | None) -> None:
        generation = request.generation
        stats = {**stats, **({"error": error} if error else {})}
        self.store.update_message(request.user_id, request.message_id, content=generation.answer,
                                  reasoning=generation.reasoning, stats=stats, status=STORE_STATUS[status])


def _reason(exc: Exception) -> str:
    """The refusal shown to the user: a NotFound says what, never which id (ids stay in the server's logs)."""
    return NOT_FOUND if isinstance(exc, NotFound) else str(exc)
