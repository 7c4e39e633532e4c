"""The message tree of a session: turns, regenerate/edit as siblings, selection and the active path.

A mixin of SessionStore (it uses the store's `_tx`, `_rows`, `_lock` and `_conn`). Each parent has at most one
selected child (a partial unique index enforces it); the active path follows selected children from the root.
"""
import json
import sqlite3
import time
from collections.abc import Iterable

DEFAULT_TITLE = "New chat"
TITLE_CHARS = 60
MESSAGE_STATUSES = ("streaming", "done", "stopped", "error", "interrupted")
INTERRUPTED = "interrupted: the server stopped during this reply"
_SIBLINGS = "s.session_id = m.session_id AND s.parent_id IS m.parent_id"
MESSAGE_SELECT = (f"SELECT m.*, (SELECT count(*) FROM messages s WHERE {_SIBLINGS}) AS sibling_count, "
                  f"(SELECT count(*) FROM messages s WHERE {_SIBLINGS} AND s.id <= m.id) AS sibling_index")
ACTIVE_PATH = f"""WITH RECURSIVE path(id, depth) AS (
    SELECT id, 0 FROM messages WHERE session_id = ? AND parent_id IS NULL AND selected = 1
    UNION ALL SELECT c.id, path.depth + 1 FROM messages c JOIN path ON c.parent_id = path.id WHERE c.selected = 1)
{MESSAGE_SELECT} FROM path JOIN messages m USING (id) ORDER BY path.depth"""
PATH_TO = f"""WITH RECURSIVE up(id, depth) AS (
    SELECT ?, 0 UNION ALL SELECT p.parent_id, up.depth + 1 FROM messages p JOIN up ON p.id = up.id
    WHERE p.parent_id IS NOT NULL)
{MESSAGE_SELECT} FROM up JOIN messages m USING (id) ORDER BY up.depth DESC"""


class NotFound(LookupError):
    """No such session, message, attachment or share token for this user."""


def message_dict(row: sqlite3.Row) -> dict:
    """A messages row (with sibling_count/sibling_index) as a plain dict; stats decoded, selected as bool."""
    message = dict(row)
    message["stats"] = json.loads(message["stats"])
    message["selected"] = bool(message["selected"])
    return message


def _title_from(content: str) -> str:
    line = content.strip().split("\n", 1)[0].strip()
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"


class MessageTree:
    """Message operations of SessionStore: every method takes user_id and checks ownership."""

    def add_turn(self, user_id: int, session_id: str, content: str, *, attachment_ids: Iterable[int] = (),
                 status: str = "streaming") -> tuple[int, int]:
        """Append a user message and an empty assistant reply after the active leaf, in one transaction.

        Pending attachments (attachment_ids) are linked to the user message. A session still titled
        DEFAULT_TITLE takes its title from the first message. Returns (user_message_id, assistant_message_id).
        """
        with self._tx() as conn:
            self._session_row(conn, user_id, session_id)
            path = conn.execute(ACTIVE_PATH, (session_id,)).fetchall()
            if not path and content.strip():
                conn.execute("UPDATE sessions SET title = ? WHERE id = ? AND title = ?",
                             (_title_from(content), session_id, DEFAULT_TITLE))
            user_msg = self._insert(conn, session_id, path[-1]["id"] if path else None, "user", content, "done")
            self._link_attachments(conn, session_id, user_msg, attachment_ids)
            return user_msg, self._insert(conn, session_id, user_msg, "assistant", "", status)

    def regenerate(self, user_id: int, message_id: int, *, status: str = "streaming") -> int:
        """A new empty sibling of assistant message `message_id`, selected; returns its id."""
        with self._tx() as conn:
            old = self._message_row(conn, user_id, message_id)
            if old["role"] != "assistant":
                raise ValueError(f"message {message_id} is a {old['role']} message; regenerate an assistant reply")
            return self._insert(conn, old["session_id"], old["parent_id"], "assistant", "", status)

    def edit_turn(self, user_id: int, message_id: int, content: str, *, attachment_ids: Iterable[int] = (),
                  status: str = "streaming") -> tuple[int, int]:
        """Edit user message `message_id` as a new sibling (its documents copied) plus an empty reply."""
        with self._tx() as conn:
            old = self._message_row(conn, user_id, message_id)
            if old["role"] != "user":
                raise ValueError(f"message {message_id} is an {old['role']} message; edit a user message")
            user_msg = self._insert(conn, old["session_id"], old["parent_id"], "user", content, "done")
            conn.execute("INSERT INTO attachments (session_id, message_id, original_name, kind, text, num_tokens, "
                         "tokens_estimated, num_bytes, created_at) SELECT session_id, ?, original_name, kind, text, "
                         "num_tokens, tokens_estimated, num_bytes, created_at FROM attachments WHERE message_id = ? "
                         "ORDER BY id", (user_msg, message_id))
            self._link_attachments(conn, old["session_id"], user_msg, attachment_ids)
            return user_msg, self._insert(conn, old["session_id"], user_msg, "assistant", "", status)

    def add_child(self, user_id: int, parent_id: int, role: str, content: str, *, status: str = "done") -> int:
        """Append a message under `parent_id` (selected): a tool result, or the reply after it; returns its id."""
        with self._tx() as conn:
            parent = self._message_row(conn, user_id, parent_id)
            return self._insert(conn, parent["session_id"], parent_id, role, content, status)

    def update_message(self, user_id: int, message_id: int, *, content: str | None = None,
                       reasoning: str | None = None, stats: dict | None = None, status: str | None = None) -> None:
        """Overwrite the given fields of a message (streaming saves, stop, final stats)."""
        if status is not None and status not in MESSAGE_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(MESSAGE_STATUSES)}")
        fields = {"content": content, "reasoning": reasoning, "status": status,
                  "stats": None if stats is None else json.dumps(stats)}
        fields = {k: v for k, v in fields.items() if v is not None}
        with self._tx() as conn:
            row = self._message_row(conn, user_id, message_id)
            if fields:
                conn.execute(f"UPDATE messages SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                             (*fields.values(), message_id))
            conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), row["session_id"]))

    def mark_interrupted(self) -> int:
        """Start-up, with the data directory locked: every reply still "streaming" was left by a dead process; mark
        it "interrupted" (the text it had streamed stays). Returns how many."""
        with self._tx() as conn:
            return conn.execute("UPDATE messages SET status = 'interrupted', stats = json_set(stats, '$.error', ?) "
                                "WHERE status = 'streaming'", (INTERRUPTED,)).rowcount

    def get_message(self, user_id: int, message_id: int) -> dict:
        """One message as a dict (see active_path)."""
        with self._lock:
            row = self._message_row(self._conn, user_id, message_id)
            return message_dict(self._conn.execute(f"{MESSAGE_SELECT} FROM messages m WHERE m.id = ?",
                                               (row["id"],)).fetchone())

    def siblings(self, user_id: int, message_id: int) -> list[dict]:
        """The versions of a message (itself included): messages with the same parent, oldest first."""
        row = self.get_message(user_id, message_id)
        rows = self._rows(f"{MESSAGE_SELECT} FROM messages m WHERE m.session_id = ? AND m.parent_id IS ? "
                          "ORDER BY m.id", row["session_id"], row["parent_id"])
        return [message_dict(r) for r in rows]

    def select_message(self, user_id: int, message_id: int) -> list[dict]:
        """Make `message_id` the selected version among its siblings; returns the new active path."""
        with self._tx() as conn:
            row = self._message_row(conn, user_id, message_id)
            self._select(conn, row["session_id"], row["parent_id"], message_id)
        return self.active_path(user_id, row["session_id"])

    def active_path(self, user_id: int, session_id: str) -> list[dict]:
        """Messages from the root to the selected leaf. Each dict: id, session_id, parent_id, role, content,
        reasoning, stats, status, selected, created_at, sibling_index (1-based), sibling_count."""
        self.get_session(user_id, session_id)
        return [message_dict(row) for row in self._rows(ACTIVE_PATH, session_id)]

    def all_messages(self, user_id: int, session_id: str) -> list[dict]:
        """Every message of the session, all branches, in creation order."""
        self.get_session(user_id, session_id)
        return [message_dict(r) for r in self._rows(f"{MESSAGE_SELECT} FROM messages m WHERE m.session_id = ? "
                                                "ORDER BY m.id", session_id)]

    def _insert(self, conn, session_id: str, parent_id: int | None, role: str, content: str, status: str) -> int:
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(MESSAGE_STATUSES)}")
        conn.execute("UPDATE messages SET selected = 0 WHERE session_id = ? AND parent_id IS ? AND selected = 1",
                     (session_id, parent_id))
        cursor = conn.execute("INSERT INTO messages (session_id, parent_id, role, content, status, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (session_id, parent_id, role, content, status, time.time()))
        conn.execute("UPDATE sessions SET updated_at = ? WHERE id = ?", (time.time(), session_id))
        return cursor.lastrowid

    @staticmethod
    def _select(conn, session_id: str, parent_id: int | None, message_id: int) -> None:
        conn.execute("UPDATE messages SET selected = 0 WHERE session_id = ? AND parent_id IS ? AND selected = 1",
                     (session_id, parent_id))
        conn.execute("UPDATE messages SET selected = 1 WHERE id = ?", (message_id,))

    @staticmethod
    def _session_row(conn, user_id: int, session_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM sessions WHERE id = ? AND user_id = ?", (session_id, user_id)).fetchone()
        if row is None:
            raise NotFound(f"session {session_id!r} not found")
        return row

    @staticmethod
    def _message_row(conn, user_id: int, message_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT m.* FROM messages m JOIN sessions s ON s.id = m.session_id "
                           "WHERE m.id = ? AND s.user_id = ?", (message_id, user_id)).fetchone()
        if row is None:
            raise NotFound(f"message {message_id!r} not found")
        return row

    @staticmethod
    def _link_attachments(conn, session_id: str, message_id: int, attachment_ids: Iterable[int]) -> None:
        for attachment_id in attachment_ids:
            cursor = conn.execute("UPDATE attachments SET message_id = ? WHERE id = ? AND session_id = ? "
                                  "AND message_id IS NULL", (message_id, attachment_id, session_id))
            if cursor.rowcount == 0:
                raise NotFound(f"attachment {attachment_id!r} is not a pending upload of this session")
