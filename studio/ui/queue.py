"""A message sent while a reply of the same chat streams waits visibly ("Queued: …") and goes out when that reply
ends, instead of being dropped. Wraps ChatHandlers.send; its event has one more output, the #m1-queued note.
"""
import asyncio
import html

import gradio as gr

from studio.ui.values import only, skip

POLL_S = 0.2


def queued_html(text: str) -> str:
    """The note above the composer for a waiting message."""
    short = text if len(text) <= 120 else text[:119] + "…"
    return (f'<div class="m1-queued" role="status">Queued: <b>{html.escape(short)}</b> · sent when the current '
            "reply ends (Stop ends it now).</div>")


class SendQueue:
    """send(...) = ChatHandlers.send, but waiting for this chat's running reply first (STREAM values + note)."""

    def __init__(self, handlers):
        self.handlers = handlers

    def busy(self, uid: int, sid: str | None) -> bool:
        """Whether a reply of this user's chat `sid` is generating now."""
        return bool(sid) and any(r.user_id == uid for r in self.handlers.chat.running(sid))

    async def send(self, request: gr.Request, message, sid, *rest):
        uid = self.handlers.sessions.uid(request)
        text = ((message or {}).get("text") or "").strip()
        note = skip()
        if text and self.busy(uid, sid):
            cleared = {"__type__": "update", "value": {"text": "", "files": []}}
            yield (skip(), skip(), cleared) + only() + (queued_html(text),)
            while self.busy(uid, sid):
                await asyncio.sleep(POLL_S)
            note = ""
        async for values in self.handlers.send(request, message, sid, *rest):
            yield values + (note,)
            note = skip()
