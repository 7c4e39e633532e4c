"""Session-side handlers of the studio page (sidebar, settings, sharing), one call into the services each.

`SessionHandlers(services)` methods take component values (and gr.Request) and return component values in the
order of the lists named in studio/ui/ui.py (VIEW = the conversation view). The user is gr.Request.username when
the studio runs with --auth, else "local"; every store call passes that user, so users never see each other.
"""
import asyncio
import html

import gradio as gr

from studio.ui import views, views_html
from studio.chat_settings import ChatSettings
from studio.store.store import NotFound
from studio.store.budget import summarize
from studio.ui.documents import DocumentHandlers, remove_gradio_copy
from studio.ui.exports import export_link
from studio.ui.page import header_html
from studio.ui.values import DEFAULT_SETTINGS, only, radio, settings_from, settings_values, skip
from studio.ui.versions import with_version_rows

LOCAL_USER = "local"


def user_name(request) -> str:
    """The store user of a request: the logged-in name, or LOCAL_USER without --auth."""
    return getattr(request, "username", None) or LOCAL_USER


class SessionHandlers(DocumentHandlers):
    """Sidebar, settings and share handlers (documents: DocumentHandlers) over services.store and services.chat."""

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
            return (None, [], [], radio(sessions, None), "", views_html.budget_html(budget), "", "", None)
        path = self.store.active_path(uid, sid)
        attachments = self.store.attachments(uid, sid)
        rows, ids = with_version_rows(*views.transcript(path, attachments, show_reasoning=show_reasoning,
                                                        limit=limit), path)
        pending = [a for a in attachments if a["message_id"] is None]
        last = next((m for m in reversed(path) if m["role"] == "assistant"), None)
        title = self.store.get_session(uid, sid)["title"]
        meter = views_html.budget_html(self.chat.budget(uid, sid, draft, settings))
        return (sid, rows, ids, radio(sessions, sid), title, meter, views_html.chips_html(pending),
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
        settings = self.chat.settings(uid, sid) if sid else self.defaults_for(uid)
        return self.view(uid, sid, settings=settings) + settings_values(settings) + (self._whoami(request),)

    def switch(self, request: gr.Request, sid) -> tuple:
        """Open another session (settings panel follows the session)."""
        uid = self.uid(request)
        settings = self.chat.settings(uid, sid)
        return self.view(uid, sid, settings=settings) + settings_values(settings)

    def defaults_for(self, uid: int) -> ChatSettings:
        """Settings of a new chat of this user (studio/ui/defaults.py puts the user's stored defaults here)."""
        return settings_from(*DEFAULT_SETTINGS)

    def new_chat(self, request: gr.Request) -> tuple:
        """An empty view with the user's defaults; the session is created with the first message or document."""
        uid = self.uid(request)
        settings = self.defaults_for(uid)
        return self.view(uid, None, settings=settings) + settings_values(settings)

    def refresh(self, request: gr.Request, sid, show_reasoning, limit, *settings_panel) -> tuple:
        """Re-render the view (e.g. 'Load earlier thinking' or 'Show earlier')."""
        uid = self.uid(request)
        return self.view(uid, sid, show_reasoning=show_reasoning, limit=limit,
                         settings=settings_from(*settings_panel))

    def search(self, request: gr.Request, query, sid):
        """Session list filtered by title/content; empty query lists all."""
        uid = self.uid(request)
        if not (query or "").strip():
            return radio(self.store.list_sessions(uid), sid)
        return {"choices": views.search_choices(self.store.search(uid, query)), "value": sid,
                "__type__": "update"}

    def rename(self, request: gr.Request, sid, title):
        """Rename the open session; returns the session list."""
        uid = self.uid(request)
        if sid and (title or "").strip():
            self.store.rename_session(uid, sid, title)
        return radio(self.store.list_sessions(uid), sid)

    def delete(self, request: gr.Request, sid, armed) -> tuple:
        """First click arms the button for this session ("Click again to delete"); the second deletes the open
        session and opens the newest remaining one. Returns (armed session, button, *VIEW, *settings panel)."""
        if not sid:
            return (None, skip()) + only(size=16)
        if armed != sid:  # armed for this session only
            return (sid, {"value": "Click again to delete", "__type__": "update"}) + only(size=16)
        uid = self.uid(request)
        self.store.delete_session(uid, sid)
        sessions = self.store.list_sessions(uid, limit=1)
        view = self.switch(request, sessions[0]["id"]) if sessions else self.new_chat(request)
        return (None, {"value": "Delete", "__type__": "update"}) + view

    def delete_open(self, request: gr.Request, sid) -> tuple:
        """The chat's trash button ("Delete this chat", confirmed on the page): stop its reply, delete it, open the
        newest remaining chat. Returns (*VIEW, *settings panel)."""
        uid = self.uid(request)
        if sid and self._owns(uid, sid):
            for running in self.chat.running(sid):
                if running.user_id == uid:
                    self.chat.stop(running)
            self.store.delete_session(uid, sid)
        sessions = self.store.list_sessions(uid, limit=1)
        return self.switch(request, sessions[0]["id"]) if sessions else self.new_chat(request)

    def export(self, request: gr.Request, sid, fmt):
        """A link to the session's export (made on request by the owner-checked /export route, no temp file)."""
        if not sid:
            return ""
        title = self.store.get_session(self.uid(request), sid)["title"]
        return export_link(getattr(self.services, "root_path", "") or "", sid, "md" if fmt == "md" else "json", title)

    def import_file(self, request: gr.Request, path) -> tuple:
        """Import an exported JSON session and open it; a bad file is reported, nothing is added."""
        uid = self.uid(request)
        try:
            with open(path, "rb") as file:
                sid = self.store.import_json(uid, file.read())
        finally:
            remove_gradio_copy(path)
        title = self.store.get_session(uid, sid)["title"]
        self.store.rename_session(uid, sid, f"{title} (imported)")  # told apart from the chat it was exported from
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


