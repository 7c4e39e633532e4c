"""SessionStore: users, chat sessions, branching message trees and attachments on SQLite (WAL), isolated per user.

    store = SessionStore("data/sessions.db")
    uid = store.ensure_user("alice")
    sid = store.create_session(uid)["id"]
    doc_id = store.add_attachment(uid, sid, document)               # pending until the next turn
    user_msg, reply = store.add_turn(uid, sid, "Summarise it", attachment_ids=[doc_id])
    prompt = store.prompt_messages(uid, sid, before=reply)          # OpenAI-style dicts for the engine
    store.update_message(uid, reply, content=answer, reasoning=thinking, stats=stats, status="done")

Every method takes user_id; another user's session, message or attachment is reported as NotFound. Messages form
a tree (see store_messages), prompts and budgets come from store_prompt, export/import from store_export.
One write = one transaction (a whole turn included). Thread-safe: one connection behind a lock.
"""
import json
import secrets
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager

from studio.store.budget import CountCache
from studio.store.export import ExportImport
from studio.store.messages import DEFAULT_TITLE, INTERRUPTED, PATH_TO, MessageTree, NotFound, message_dict
from studio.store.prompt import PromptBuilder
from studio.store.schema import has_search_index, migrate
from studio.store.search import register_functions, search_sessions

__all__ = ["DEFAULT_TITLE", "INTERRUPTED", "NotFound", "SessionStore"]


class SessionStore(MessageTree, PromptBuilder, ExportImport):
    """Persistent chat sessions in one SQLite file (created and migrated on open)."""

    def __init__(self, path):
        self.path = str(path)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        register_functions(self._conn)
        for pragma in ("journal_mode = WAL", "foreign_keys = ON", "busy_timeout = 10000", "synchronous = NORMAL"):
            self._conn.execute(f"PRAGMA {pragma}")
        with self._lock:
            migrate(self._conn)
        self.has_fts = has_search_index(self._conn)
        self._counts = CountCache()

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self):
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(self, sql: str, *args) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def ensure_user(self, name: str) -> int:
        """The id of the user called `name`, created on first use."""
        if not name:
            raise ValueError("user name must not be empty")
        with self._tx() as conn:
            conn.execute("INSERT OR IGNORE INTO users (name, created_at) VALUES (?, ?)", (name, time.time()))
            return conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()[0]

    def create_session(self, user_id: int, title: str = DEFAULT_TITLE, *, system_prompt: str = "",
                       settings: dict | None = None, replay_thinking: bool = False) -> dict:
        """A new empty session; returns it as a dict (see get_session)."""
        session_id, now = uuid.uuid4().hex, time.time()
        with self._tx() as conn:
            conn.execute("INSERT INTO sessions (id, user_id, title, system_prompt, settings, replay_thinking, "
                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (session_id, user_id, title, system_prompt, json.dumps(settings or {}),
                          int(replay_thinking), now, now))
        return self.get_session(user_id, session_id)

    def list_sessions(self, user_id: int, *, limit: int = 200, offset: int = 0) -> list[dict]:
        """The user's sessions, most recently updated first."""
        rows = self._rows("SELECT * FROM sessions WHERE user_id = ? ORDER BY updated_at DESC, rowid DESC "
                          "LIMIT ? OFFSET ?", user_id, limit, offset)
        return [_session(row) for row in rows]

    def get_session(self, user_id: int, session_id: str) -> dict:
        """Session dict: id, title, system_prompt, settings, replay_thinking, created_at, updated_at, share."""
        rows = self._rows("SELECT * FROM sessions WHERE id = ? AND user_id = ?", session_id, user_id)
        if not rows:
            raise NotFound(f"session {session_id!r} not found")
        return _session(rows[0])

    def rename_session(self, user_id: int, session_id: str, title: str) -> None:
        """Set the session title (stripped; must not be empty)."""
        if not title.strip():
            raise ValueError("session title must not be empty")
        self._update_session(user_id, session_id, title=title.strip())

    def update_session(self, user_id: int, session_id: str, *, system_prompt: str | None = None,
                       settings: dict | None = None, replay_thinking: bool | None = None) -> dict:
        """Change the given session fields; returns the updated session."""
        fields = {"system_prompt": system_prompt, "replay_thinking": None if replay_thinking is None
                  else int(replay_thinking), "settings": None if settings is None else json.dumps(settings)}
        self._update_session(user_id, session_id, **{k: v for k, v in fields.items() if v is not None})
        return self.get_session(user_id, session_id)

    def _update_session(self, user_id: int, session_id: str, **fields) -> None:
        assignments = "".join(f"{name} = ?, " for name in fields)
        with self._tx() as conn:
            cursor = conn.execute(f"UPDATE sessions SET {assignments}updated_at = ? WHERE id = ? AND user_id = ?",
                                  (*fields.values(), time.time(), session_id, user_id))
            if cursor.rowcount == 0:
                raise NotFound(f"session {session_id!r} not found")

    def delete_session(self, user_id: int, session_id: str) -> None:
        """Delete the session with all its messages and attachments."""
        with self._tx() as conn:
            if conn.execute("DELETE FROM sessions WHERE id = ? AND user_id = ?", (session_id, user_id)).rowcount == 0:
                raise NotFound(f"session {session_id!r} not found")

    def add_attachment(self, user_id: int, session_id: str, document, *, message_id: int | None = None) -> int:
        """Store an extracted document (any object with name, kind, text, num_tokens, num_bytes and
        tokens_estimated, e.g. studio.documents.Document); pending (sent with the next turn) unless message_id."""
        with self._tx() as conn:
            self._session_row(conn, user_id, session_id)
            if message_id is not None and self._message_row(conn, user_id, message_id)["session_id"] != session_id:
                raise NotFound(f"message {message_id!r} not found in session {session_id!r}")
            return conn.execute(
                "INSERT INTO attachments (session_id, message_id, original_name, kind, text, num_tokens, "
                "tokens_estimated, num_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, message_id, document.name, document.kind, document.text, document.num_tokens,
                 int(document.tokens_estimated), document.num_bytes, time.time())).lastrowid

    def attachments(self, user_id: int, session_id: str, *, with_text: bool = False) -> list[dict]:
        """The session's attachments, oldest first: id, message_id (None = pending), name, kind, num_tokens,
        tokens_estimated, num_bytes, created_at, and text when with_text."""
        self.get_session(user_id, session_id)
        text = ", text" if with_text else ""
        rows = self._rows(f"SELECT id, message_id, original_name AS name, kind, num_tokens, tokens_estimated, "
                          f"num_bytes, created_at{text} FROM attachments WHERE session_id = ? ORDER BY id", session_id)
        return [dict(row, tokens_estimated=bool(row["tokens_estimated"])) for row in rows]

    def remove_attachment(self, user_id: int, attachment_id: int) -> None:
        """Delete a pending upload (one not yet sent with a message)."""
        with self._tx() as conn:
            cursor = conn.execute("DELETE FROM attachments WHERE id = ? AND message_id IS NULL AND session_id IN "
                                  "(SELECT id FROM sessions WHERE user_id = ?)", (attachment_id, user_id))
            if cursor.rowcount == 0:
                raise NotFound(f"attachment {attachment_id!r} is not a pending upload of yours")

    def search(self, user_id: int, query: str, *, limit: int = 50) -> list[dict]:
        """Sessions whose title or message content contains `query` (see store_search.search_sessions)."""
        with self._lock:
            return search_sessions(self._conn, user_id, query, limit=limit, use_fts=self.has_fts)

    def create_share(self, user_id: int, session_id: str, *, include_reasoning: bool = True,
                     include_documents: bool = False, expires_at: float | None = None) -> str:
        """A read-only link token for the conversation as it is now (the current active path, frozen at its
        leaf). Sharing again replaces the previous token."""
        token = secrets.token_urlsafe(18)
        leaf = (self.active_path(user_id, session_id) or [{"id": None}])[-1]["id"]
        with self._tx() as conn:
            conn.execute("UPDATE sessions SET share_token = ?, share_reasoning = ?, share_documents = ?, "
                         "share_expires_at = ?, share_leaf_id = ? WHERE id = ? AND user_id = ?",
                         (token, int(include_reasoning), int(include_documents), expires_at, leaf, session_id,
                          user_id))
        return token

    def revoke_share(self, user_id: int, session_id: str) -> None:
        """Invalidate the session's share token (its link then reports NotFound)."""
        self.get_session(user_id, session_id)
        with self._tx() as conn:
            conn.execute("UPDATE sessions SET share_token = NULL, share_leaf_id = NULL WHERE id = ? AND user_id = ?",
                         (session_id, user_id))

    def shared_session(self, token: str) -> dict:
        """Read-only view behind a share token: title, created_at, messages [{role, content, reasoning?}] up to
        the shared leaf, documents [{name, kind, num_tokens, text?}]. NotFound when revoked or expired."""
        rows = self._rows("SELECT * FROM sessions WHERE share_token = ?", token) if token else []
        if not rows or (rows[0]["share_expires_at"] is not None and rows[0]["share_expires_at"] < time.time()):
            raise NotFound("this share link does not exist, was revoked or has expired")
        session = rows[0]
        path = [message_dict(r) for r in self._rows(PATH_TO, session["share_leaf_id"])] \
            if session["share_leaf_id"] is not None else []
        ids = {message["id"] for message in path}
        messages = [{"role": m["role"], "content": m["content"],
                     **({"reasoning": m["reasoning"]} if session["share_reasoning"] else {})} for m in path]
        documents = [{k: a[k] for k in ("name", "kind", "num_tokens", "text") if k != "text"
                      or session["share_documents"]}
                     for a in self.attachments(session["user_id"], session["id"], with_text=True)
                     if a["message_id"] in ids]
        return {"title": session["title"], "created_at": session["created_at"], "messages": messages,
                "documents": documents}


def _session(row: sqlite3.Row) -> dict:
    share = None if row["share_token"] is None else {
        "token": row["share_token"], "reasoning": bool(row["share_reasoning"]),
        "documents": bool(row["share_documents"]), "expires_at": row["share_expires_at"]}
    return {"id": row["id"], "user_id": row["user_id"], "title": row["title"], "system_prompt": row["system_prompt"],
            "settings": json.loads(row["settings"]), "replay_thinking": bool(row["replay_thinking"]),
            "created_at": row["created_at"], "updated_at": row["updated_at"], "share": share}
