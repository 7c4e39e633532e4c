"""Session-side handlers of the studio page (sidebar, settings, documents, sharing), one call into the services each.

`SessionHandlers(services)` methods take component values (and gr.Request) and return component values in the
order of the lists named in studio/ui.py (VIEW = the conversation view). The user is gr.Request.username when
the studio runs with --auth, else "local"; every store call passes that user, so users never see each other.
"""
import asyncio
import html
import json
import os
import tempfile
import time

import gradio as gr

from studio import views, views_html
from studio.chat_settings import DEFAULT_MAX_TOKENS, SYSTEM_PRESETS, ChatSettings
from studio.documents import DocumentError
from studio.store import NotFound
from studio.store_budget import summarize
from studio.ui_page import header_html

LOCAL_USER = "local"
PROGRESS_EVERY_S = 0.25


def user_name(request) -> str:
    """The store user of a request: the logged-in name, or LOCAL_USER without --auth."""
    return getattr(request, "username", None) or LOCAL_USER


def settings_from(preset, system, temperature, top_p, max_tokens, thinking_budget, replay) -> ChatSettings:
    """ChatSettings from the settings panel (thinking budget 0 = unlimited)."""
    budget = int(thinking_budget or 0)
    return ChatSettings(system_prompt=system or "", temperature=float(temperature), top_p=float(top_p),
                        max_tokens=int(max_tokens), thinking_budget=budget or None, replay_thinking=bool(replay))


def settings_values(settings: ChatSettings) -> tuple:
    """The settings panel values (preset, system, temperature, top_p, max tokens, thinking budget, replay)."""
    preset = next((name for name, text in SYSTEM_PRESETS.items() if text == settings.system_prompt), "Custom")
    return (preset, settings.system_prompt, settings.temperature, settings.top_p, settings.max_tokens,
            settings.thinking_budget or 0, settings.replay_thinking)


DEFAULT_SETTINGS = settings_values(ChatSettings(max_tokens=DEFAULT_MAX_TOKENS))


class SessionHandlers:
    """Sidebar, documents, settings and share handlers over services.store and services.chat."""

    def __init__(self, services):
        self.services, self.store, self.chat = services, services.store, services.chat
        self.max_upload_bytes = getattr(services, "max_upload_bytes", None) or 100 * 1024 * 1024
        self._locks: dict[int, asyncio.Lock] = {}
        self._page_sessions: dict[str, str] = {}  # page (session hash) -> session its first upload created

    def uid(self, request) -> int:
        """The store id of the request's user."""
        return self.store.ensure_user(user_name(request))

    # --- the conversation view ----------------------------------------------------------------------------------
    def view(self, uid: int, sid: str | None, *, show_reasoning=False, limit=views.TRANSCRIPT_MESSAGES,
             settings: ChatSettings | None = None, draft: str = "") -> tuple:
        """VIEW values: session id, chatbot, row ids, session list, title, meter, chips, version label, saved id."""
        sessions = self.store.list_sessions(uid)
        if sid is None:
            budget = self.empty_budget(settings)
            return (None, [], [], _radio(sessions, None), "", views_html.budget_html(budget), "", "", None)
        path = self.store.active_path(uid, sid)
        attachments = self.store.attachments(uid, sid)
        rows, ids = views.transcript(path, attachments, show_reasoning=show_reasoning, limit=limit)
        pending = [a for a in attachments if a["message_id"] is None]
        last = next((m for m in reversed(path) if m["role"] == "assistant"), None)
        title = self.store.get_session(uid, sid)["title"]
        meter = views_html.budget_html(self.chat.budget(uid, sid, draft, settings))
        return (sid, rows, ids, _radio(sessions, sid), title, meter, views_html.chips_html(pending),
                views.version_label(last), sid)

    def empty_budget(self, settings: ChatSettings | None) -> dict:
        """The meter of a chat not created yet: the system prompt and the reserved output."""
        settings = settings or ChatSettings()
        count = self.chat.tokenizer.count_tokens
        return summarize(system=count(settings.system_prompt) if settings.system_prompt else 0, documents=[],
                         history=0, template=0, reserved_output=settings.max_tokens, window=self.chat.window)

    def load(self, request: gr.Request, saved_sid) -> tuple:
        """Page load: reopen the session id kept in the browser if it is this user's, else the newest one."""
        uid = self.uid(request)
        sid = saved_sid if saved_sid and self._owns(uid, saved_sid) else None
        if sid is None:
            sessions = self.store.list_sessions(uid, limit=1)
            sid = sessions[0]["id"] if sessions else None
        settings = self.chat.settings(uid, sid) if sid else ChatSettings()
        return self.view(uid, sid, settings=settings) + settings_values(settings) + (self._whoami(request),)

    def switch(self, request: gr.Request, sid) -> tuple:
        """Open another session (settings panel follows the session)."""
        uid = self.uid(request)
        settings = self.chat.settings(uid, sid)
        return self.view(uid, sid, settings=settings) + settings_values(settings)

    def new_chat(self, request: gr.Request) -> tuple:
        """An empty view; the session is created with the first message or document."""
        return self.view(self.uid(request), None) + DEFAULT_SETTINGS

    def refresh(self, request: gr.Request, sid, show_reasoning, limit, *settings_panel) -> tuple:
        """Re-render the view (e.g. 'Load earlier thinking' or 'Show earlier')."""
        uid = self.uid(request)
        return self.view(uid, sid, show_reasoning=show_reasoning, limit=limit,
                         settings=settings_from(*settings_panel))

    def search(self, request: gr.Request, query, sid):
        """Session list filtered by title/content; empty query lists all."""
        uid = self.uid(request)
        if not (query or "").strip():
            return _radio(self.store.list_sessions(uid), sid)
        return {"choices": views.search_choices(self.store.search(uid, query)), "value": sid,
                "__type__": "update"}

    def rename(self, request: gr.Request, sid, title):
        """Rename the open session; returns the session list."""
        uid = self.uid(request)
        if sid and (title or "").strip():
            self.store.rename_session(uid, sid, title)
        return _radio(self.store.list_sessions(uid), sid)

    def delete(self, request: gr.Request, sid, armed) -> tuple:
        """First click arms the button for this session ("Click again to delete"); the second deletes the open
        session and opens the newest remaining one. Returns (armed session, button, *VIEW, *settings panel)."""
        if not sid:
            return (None, _skip()) + _only(size=16)
        if armed != sid:  # armed for this session only
            return (sid, {"value": "Click again to delete", "__type__": "update"}) + _only(size=16)
        uid = self.uid(request)
        self.store.delete_session(uid, sid)
        sessions = self.store.list_sessions(uid, limit=1)
        view = self.switch(request, sessions[0]["id"]) if sessions else self.new_chat(request)
        return (None, {"value": "Delete", "__type__": "update"}) + view

    def export(self, request: gr.Request, sid, fmt):
        """Write the session as Markdown or JSON to a temp file for download."""
        if not sid:
            return None
        uid = self.uid(request)
        title = self.store.get_session(uid, sid)["title"]
        safe = "-".join("".join(c if c.isalnum() or c in "-_" else " " for c in title).split()) or "chat"
        path = os.path.join(tempfile.mkdtemp(prefix="m1-export-"), f"{safe}.{'md' if fmt == 'md' else 'json'}")
        with open(path, "w", encoding="utf-8") as file:
            if fmt == "md":
                file.write(self.store.export_markdown(uid, sid))
            else:
                json.dump(self.store.export_json(uid, sid), file, ensure_ascii=False, indent=1)
        return path

    def import_file(self, request: gr.Request, path) -> tuple:
        """Import an exported JSON session and open it; a bad file is reported, nothing is added."""
        uid = self.uid(request)
        with open(path, "rb") as file:
            sid = self.store.import_json(uid, file.read())
        return self.switch(request, sid)

    def share(self, request: gr.Request, sid, reasoning, documents) -> str:
        """Create (or replace) the read-only link of the open session; returns its absolute URL."""
        if not sid:
            raise ValueError("open or start a chat before sharing it")
        token = self.store.create_share(self.uid(request), sid, include_reasoning=bool(reasoning),
                                        include_documents=bool(documents))
        return share_url(request, getattr(self.services, "root_path", "") or "", token)

    def revoke(self, request: gr.Request, sid) -> str:
        """Revoke the open session's share link."""
        if sid:
            self.store.revoke_share(self.uid(request), sid)
        return ""

    # --- documents ----------------------------------------------------------------------------------------------
    async def attach(self, request: gr.Request, message, sid, *settings_panel):
        """Composer change: read newly attached files (progress bar), store them as pending, update chips and the
        meter; with no files just re-count the draft. Yields STREAM values (progress, error, composer, *VIEW)."""
        uid, settings = self.uid(request), settings_from(*settings_panel)
        message = message or {"text": "", "files": []}
        files, text = message.get("files") or [], message.get("text") or ""
        if not files:
            meter = self.meter(request, sid, *settings_panel, draft=text)
            yield (_skip(), _skip(), _skip()) + _only(5, meter)
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
                        yield (progress, "", _skip()) + _only()
                    else:
                        errors.append(str(progress))
            error = views_html.error_html("; ".join(errors)) if errors else ""
            yield ("", error, {"text": text, "files": []}) + self.view(uid, sid, settings=settings, draft=text)

    def _not_pending(self, uid: int, sid: str, paths: list[str]) -> list[str]:
        """Paths whose file (same name and size) is not already waiting to be sent: the composer reports one
        upload in more than one change event."""
        pending = {(a["name"], a["num_bytes"]) for a in self.store.attachments(uid, sid) if a["message_id"] is None}
        return [p for p in paths if (os.path.basename(p), os.path.getsize(p)) not in pending]

    async def _read(self, uid, sid, path, name):
        """Run chat.attach on a worker thread; yield progress HTML while it reads, then an exception if it failed."""
        state = {"done": 0, "total": 1, "stage": "parse"}
        started = time.perf_counter()
        task = asyncio.ensure_future(asyncio.to_thread(
            self.chat.attach, uid, sid, path, original_name=name, max_bytes=self.max_upload_bytes,
            progress=lambda done, total, stage: state.update(done=done, total=total, stage=stage)))
        while not task.done():
            await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
            eta = views.eta_seconds(state["done"], state["total"], time.perf_counter() - started)
            unit = "characters" if state["stage"] in ("tokens", "parse") else state["stage"]
            verb = f"reading {name}:" if unit != "characters" else f"counting tokens of {name}:"
            yield views_html.progress_html(verb, state["done"], state["total"], eta, unit=unit)
        try:
            task.result()
        except (DocumentError, NotFound, ValueError) as exc:
            yield exc

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

    def _owns(self, uid: int, sid: str) -> bool:
        try:
            self.store.get_session(uid, sid)
            return True
        except NotFound:
            return False

    def _whoami(self, request) -> str:
        name = getattr(request, "username", None)
        root = getattr(self.services, "root_path", "") or ""
        return header_html(f'<span class="user">Signed in as <b>{html.escape(name)}</b> · '
                           f'<a href="{root}/logout">log out</a></span>' if name else "")


def share_url(request, root_path: str, token: str) -> str:
    """Absolute URL of a share token as the browser reached the studio (proxy headers respected)."""
    headers = {k.lower(): v for k, v in dict(getattr(request, "headers", {}) or {}).items()}
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost"
    scheme = headers.get("x-forwarded-proto") or "http"
    return f"{scheme}://{host}{root_path.rstrip('/')}/share/{token}"


def _radio(sessions: list[dict], sid) -> dict:
    return {"choices": views.session_choices(sessions), "value": sid, "__type__": "update"}


def _skip() -> dict:
    return {"__type__": "update"}


def _only(index: int | None = None, value=None, size: int = 9, **more) -> tuple:
    """VIEW values that change nothing, except `value` at `index` (and at_<i>=value keyword pairs)."""
    changed = {int(k[3:]): v for k, v in more.items()}
    if index is not None:
        changed[index] = value
    return tuple(changed[i] if i in changed else _skip() for i in range(size))


def _path(file) -> str:
    return file if isinstance(file, str) else file.get("path") or file.get("name")
