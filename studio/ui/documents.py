"""Document handlers of the studio page: attach files from the composer (read with a progress bar, stored as
pending for the next message), remove pending ones, and the budget meter. A mixin of SessionHandlers (uses its
`uid`, `view`, `empty_budget`, `store`, `chat`, `max_upload_bytes`, `_locks` and `_page_sessions`).
"""
import asyncio
import contextlib
import os
import time

import gradio as gr

from studio.ui import views, views_html
from studio.documents.documents import DocumentError
from studio.store.store import NotFound
from studio.ui.values import only, settings_from, skip

PROGRESS_EVERY_S = 0.25


class DocumentHandlers:
    """attach / clear_pending / meter for SessionHandlers."""

    async def attach(self, request: gr.Request, message, sid, *settings_panel):
        """Composer change: read newly attached files (progress bar), store them as pending, update chips and the
        meter; with no files just re-count the draft. Yields STREAM values (progress, error, composer, *VIEW)."""
        uid, settings = self.uid(request), settings_from(*settings_panel)
        message = message or {"text": "", "files": []}
        files, text = message.get("files") or [], message.get("text") or ""
        if not files:
            meter = self.meter(request, sid, *settings_panel, draft=text)
            yield (skip(), skip(), skip()) + only(5, meter)
            return
        async with self._locks.setdefault(uid, asyncio.Lock()):  # one upload at a time per user
            sid = sid or self._page_sessions.get(request.session_hash)
            if sid is None:
                sid = self.store.create_session(uid)["id"]
                self.chat.save_settings(uid, sid, settings)
                if len(self._page_sessions) > 10_000:
                    self._page_sessions.clear()
                self._page_sessions[request.session_hash] = sid
            errors = []
            for path in self._not_pending(uid, sid, [_path(file) for file in files]):
                async for progress in self._read(uid, sid, path, os.path.basename(path)):
                    if isinstance(progress, str):
                        yield (progress, "", skip()) + only()
                    else:
                        errors.append(str(progress))
            error = views_html.error_html("; ".join(errors)) if errors else ""
            view = self.view(uid, sid, settings=settings, draft=text)  # chat rows left alone: a reply may stream
            yield ("", error, {"text": text, "files": []}) + view[:1] + (skip(), skip()) + view[3:]

    def _not_pending(self, uid: int, sid: str, paths: list[str]) -> list[str]:
        """Paths whose file (same name and size) is not already waiting to be sent: the composer reports one
        upload in more than one change event."""
        pending = {(a["name"], a["num_bytes"]) for a in self.store.attachments(uid, sid) if a["message_id"] is None}
        return [p for p in paths if os.path.isfile(p) and (os.path.basename(p), os.path.getsize(p)) not in pending]

    async def _read(self, uid, sid, path, name):
        """Run chat.attach_isolated (a reading process); yield progress HTML while it reads, then an exception if it
        failed. Leaving (the page closed: this generator cancelled) kills the reading process."""
        state = {"done": 0, "total": 1, "stage": "parse"}
        started = time.perf_counter()
        task = asyncio.ensure_future(self.chat.attach_isolated(
            uid, sid, path, original_name=name, max_bytes=self.max_upload_bytes,
            progress=lambda done, total, stage: state.update(done=done, total=total, stage=stage)))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
                eta = views.eta_seconds(state["done"], state["total"], time.perf_counter() - started)
                unit = "characters" if state["stage"] in ("tokens", "parse") else state["stage"]
                verb = f"reading {name}:" if unit != "characters" else f"counting tokens of {name}:"
                yield views_html.progress_html(verb, state["done"], state["total"], eta, unit=unit)
            task.result()
        except (DocumentError, NotFound, ValueError) as exc:
            yield exc
        finally:
            task.cancel()
            remove_gradio_copy(path)

    def clear_pending(self, request: gr.Request, sid, *settings_panel) -> tuple:
        """Remove the documents waiting to be sent; returns (chips, meter)."""
        uid = self.uid(request)
        if sid:
            for attachment in self.store.attachments(uid, sid):
                if attachment["message_id"] is None:
                    self.store.remove_attachment(uid, attachment["id"])
        values = self.view(uid, sid, settings=settings_from(*settings_panel))
        return values[6], values[5]

    def meter(self, request: gr.Request, sid, *settings_panel, draft: str = "") -> str:
        """The meter for changed settings (max tokens reserves output; the system prompt counts) and draft."""
        uid, settings = self.uid(request), settings_from(*settings_panel)
        budget = self.chat.budget(uid, sid, draft, settings) if sid else self.empty_budget(settings)
        return views_html.budget_html(budget)

def _path(file) -> str:
    return file if isinstance(file, str) else file.get("path") or file.get("name")


def remove_gradio_copy(path: str) -> None:
    """Delete Gradio's temp copy of an upload once read (its text is in the store); other paths are left alone."""
    upload_dir = os.path.realpath(gr.utils.get_upload_folder())
    real = os.path.realpath(path)
    if real.startswith(upload_dir + os.sep):
        with contextlib.suppress(OSError):
            os.remove(real)
