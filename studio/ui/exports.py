"""GET /export/{session_id}.{md|json}: a session's export, made on request for its owner only (no file on disk).

The studio's export buttons show a link to this route; the route resolves the login the way Gradio does (its
access-token cookie; "local" without --auth), checks the session belongs to that user (404 otherwise, the id not
echoed; 401 without a login) and answers the export as an attachment.

    logins = add_export_route(app, store, auth=bool(config.auth))   # before the Gradio mount
    logins.gradio_app = <the mounted Gradio App>                     # after it
"""
import json
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from studio.store.store import NotFound
from studio.ui.queue_guard import gradio_user_lookup

LOCAL_USER = "local"
FORMATS = {"md": "text/markdown; charset=utf-8", "json": "application/json"}


class Logins:
    """The login of a request: Gradio's cookie when the studio has --auth (gradio_app set after mounting)."""

    def __init__(self, auth: bool):
        self.auth, self.gradio_app = auth, None

    def user(self, request: Request) -> str | None:
        if not self.auth:
            return LOCAL_USER
        return gradio_user_lookup(self.gradio_app)(request.scope) if self.gradio_app is not None else None


def file_name(title: str, fmt: str) -> str:
    """A download name from a session title: letters, digits, '-' and '_' only."""
    safe = "-".join("".join(c if c.isalnum() or c in "-_" else " " for c in title).split()) or "chat"
    return f"{safe}.{fmt}"


def export_link(root_path: str, session_id: str, fmt: str, title: str) -> str:
    """The HTML link the export buttons show."""
    href, name = f"{root_path.rstrip('/')}/export/{quote(session_id)}.{fmt}", file_name(title, fmt)
    return f'<a href="{href}" download="{name}">⬇ {name}</a>'


def add_export_route(app, store, *, auth: bool) -> Logins:
    """Register GET /export/{session_id}.{fmt}; returns the Logins to complete once Gradio is mounted."""
    logins = Logins(auth)

    @app.get("/export/{name}", include_in_schema=False)
    def export(name: str, request: Request) -> Response:
        session_id, _, fmt = name.rpartition(".")
        user = logins.user(request)
        if user is None:
            return JSONResponse({"detail": "not signed in"}, status_code=401)
        if fmt not in FORMATS:
            return JSONResponse({"detail": "unknown export format: use .md or .json"}, status_code=404)
        uid = store.ensure_user(user)
        try:
            title = store.get_session(uid, session_id)["title"]
            body = store.export_markdown(uid, session_id) if fmt == "md" else \
                json.dumps(store.export_json(uid, session_id), ensure_ascii=False, indent=1)
        except NotFound:
            return JSONResponse({"detail": "this chat was not found"}, status_code=404)
        filename = file_name(title, fmt)
        return Response(body.encode("utf-8"), media_type=FORMATS[fmt], headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
            "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})

    return logins
