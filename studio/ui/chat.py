"""Chat handlers of the studio page: send, regenerate, edit-and-rerun (streamed), stop, answer now, versions.

Streaming handlers are async generators over ChatService events; they yield STREAM values (see studio/ui/ui.py):
progress, error, composer, then the VIEW tuple (chatbot while streaming; all of it once the turn is saved, the
transcript re-read from the store, so the page shows exactly what was saved). Yields are coalesced to one per
STREAM_EVERY_S.
"""
import time

import gradio as gr

from studio.ui import views, views_html
from studio.ui.session import SessionHandlers
from studio.ui.values import only, radio, settings_from, skip
from studio.ui.versions import parse_action

STREAM_EVERY_S = 0.08
STREAMING = {"__type__": "update", "submit_btn": False, "stop_btn": True}  # the composer shows Stop, not Send
IDLE = {"__type__": "update", "submit_btn": True, "stop_btn": False}


class ChatHandlers:
    """Turn handlers over services.chat; `sessions` renders the view after a turn."""

    def __init__(self, services, sessions: SessionHandlers):
        self.chat, self.store, self.sessions = services.chat, services.store, sessions

    async def send(self, request: gr.Request, message, sid, show_reasoning, limit, *settings_panel):
        """Send the composer's text with the pending documents; refuse with the meter's message when over."""
        uid, settings = self.sessions.uid(request), settings_from(*settings_panel)
        text = ((message or {}).get("text") or "").strip()
        if sid is None:
            if not text:
                yield self._refuse("Type a message or attach a document first.")
                return
            sid = self.store.create_session(uid)["id"]
            self.chat.save_settings(uid, sid, settings)
        budget = self.chat.budget(uid, sid, text, settings)
        if not budget["fits"]:
            yield self._refuse(f"Not sent: the conversation would be {budget['overflow']:,} tokens over the "
                               "context window. Remove a document, lower max output tokens or start a new chat.",
                               views_html.budget_html(budget))
            return
        rows, _ = views.transcript(self.store.active_path(uid, sid), self.store.attachments(uid, sid),
                                   show_reasoning=show_reasoning, limit=limit)
        pending = [a for a in self.store.attachments(uid, sid) if a["message_id"] is None]
        rows += views.transcript([_draft(text)], [dict(a, message_id=0) for a in pending])[0]
        events = self.chat.send(uid, sid, text, settings=settings)
        async for values in self._stream(events, rows, uid, sid, show_reasoning, limit, settings, clear=True):
            yield values

    async def regenerate(self, request: gr.Request, sid, row_ids, selected, show_reasoning, limit, *settings_panel):
        """A new version of the selected reply (or of the last one)."""
        uid, settings = self.sessions.uid(request), settings_from(*settings_panel)
        target = self._assistant(uid, sid, selected)
        if target is None:
            yield self._refuse("There is no reply to regenerate yet.")
            return
        path = self.store.active_path(uid, sid)
        keep = path[:[m["id"] for m in path].index(target)] if target in [m["id"] for m in path] else path
        rows, _ = views.transcript(keep, self.store.attachments(uid, sid), show_reasoning=show_reasoning,
                                   limit=limit)
        events = self.chat.regenerate(uid, target, settings=settings)
        async for values in self._stream(events, rows, uid, sid, show_reasoning, limit, settings):
            yield values

    async def edit(self, request: gr.Request, edit: gr.EditData, sid, row_ids, show_reasoning, limit,
                   *settings_panel):
        """Chatbot edit of a user message: rerun it as a new version (the old one stays a sibling)."""
        uid, settings = self.sessions.uid(request), settings_from(*settings_panel)
        message_id = row_ids[edit.index] if edit is not None and edit.index < len(row_ids) else -1
        if message_id < 0 or self.store.get_message(uid, message_id)["role"] != "user":
            yield self._refuse("Only your own messages can be edited.")
            return
        path = self.store.active_path(uid, sid)
        keep = path[:[m["id"] for m in path].index(message_id)]
        attachments = self.store.attachments(uid, sid)
        rows, _ = views.transcript(keep, attachments, show_reasoning=show_reasoning, limit=limit)
        docs = [dict(a, message_id=0) for a in attachments if a["message_id"] == message_id]
        text = edit.value if isinstance(edit.value, str) else str(edit.value)
        rows += views.transcript([_draft(text)], docs)[0]
        events = self.chat.edit_and_rerun(uid, message_id, text, settings=settings)
        async for values in self._stream(events, rows, uid, sid, show_reasoning, limit, settings):
            yield values

    def stop(self, request: gr.Request, sid) -> None:
        """Stop this session's running reply: the engine request is aborted, what was shown is saved."""
        uid = self.sessions.uid(request)
        for running in self.chat.running(sid):
            if running.user_id == uid:
                self.chat.stop(running)

    def answer_now(self, request: gr.Request, sid) -> None:
        """Close the thinking of this session's running reply so the model answers now."""
        uid = self.sessions.uid(request)
        for running in self.chat.running(sid):
            if running.user_id == uid:
                self.chat.answer_now(running)

    def select(self, request: gr.Request, evt: gr.SelectData, row_ids) -> tuple:
        """Chatbot click: that message becomes the one the version arrows and Regenerate act on."""
        index = evt.index if evt is not None and not isinstance(evt.index, (list, tuple)) else \
            (evt.index[0] if evt is not None else -1)
        message_id = row_ids[index] if 0 <= index < len(row_ids) else -1
        if message_id < 0:
            return None, ""
        return message_id, views.version_label(self.store.get_message(self.sessions.uid(request), message_id))

    def version(self, request: gr.Request, step, sid, selected, show_reasoning, limit, *settings_panel) -> tuple:
        """Show the previous (step -1) or next (+1) version of the selected message; returns (selected, VIEW...)."""
        uid = self.sessions.uid(request)
        target = selected or self._assistant(uid, sid, None)
        if not target:
            return (selected,) + only()
        versions = self.store.siblings(uid, target)
        at = [m["id"] for m in versions].index(target)
        chosen = versions[max(0, min(len(versions) - 1, at + step))]
        self.store.select_message(uid, chosen["id"])
        values = self.sessions.view(uid, sid, show_reasoning=show_reasoning, limit=limit,
                                    settings=settings_from(*settings_panel))
        label = views.version_label(self.store.get_message(uid, chosen["id"]))
        return (chosen["id"],) + values[:7] + (label,) + values[8:]

    def version_at(self, request: gr.Request, sid, action, show_reasoning, limit, *settings_panel) -> tuple:
        """A version link under a message ("‹ 2/3 ›"): show that message's previous or next version."""
        parsed = parse_action(action)
        if parsed is None or not sid:
            return (skip(),) + only()
        step, message_id = parsed
        return self.version(request, step, sid, message_id, show_reasoning, limit, *settings_panel)

    # --- internals ----------------------------------------------------------------------------------------------
    async def _stream(self, events, rows, uid, sid, show_reasoning, limit, settings, clear=False):
        live, last = views.LiveReply(time.perf_counter), 0.0
        composer = dict(STREAMING, value={"text": "", "files": []}) if clear else STREAMING
        sessions = radio(self.store.list_sessions(uid), sid)
        yield ("", "", composer) + only(0, sid, at_1=rows + live.rows(), at_3=sessions, at_6="", at_8=sid)
        async for event in events:
            live.feed(event)
            now = time.perf_counter()
            if not live.finished and (now - last >= STREAM_EVERY_S or event.kind == "prefill"):
                last = now
                yield (self._progress(live), "", skip()) + only(1, rows + live.rows())
        error = views_html.error_html(live.error) if live.error else ""
        yield ("", error, IDLE) + self.sessions.view(uid, sid, show_reasoning=show_reasoning, limit=limit,
                                                       settings=settings)

    @staticmethod
    def _progress(live: views.LiveReply) -> str:
        if live.progress is None:
            return ""
        done, total, eta = live.progress
        return views_html.progress_html("reading the prompt:", done, total, eta)

    @staticmethod
    def _refuse(message: str, meter: str | None = None) -> tuple:
        view = only(5, meter) if meter else only()
        return ("", views_html.error_html(message), skip()) + view

    def _assistant(self, uid, sid, selected) -> int | None:
        if selected and selected > 0 and self.store.get_message(uid, selected)["role"] == "assistant":
            return selected
        path = self.store.active_path(uid, sid) if sid else []
        return next((m["id"] for m in reversed(path) if m["role"] == "assistant"), None)


def _draft(text: str) -> dict:
    """The user message being sent, as a transcript message (it is stored when the turn starts)."""
    return {"id": 0, "role": "user", "content": text, "reasoning": "", "stats": {}, "status": "done",
            "sibling_index": 1, "sibling_count": 1}
