"""Session export (complete JSON with branches and attachments; readable Markdown of the active path) and the
validation and import of such a JSON file (new ids, same tree). `ExportImport` is a SessionStore mixin."""
import datetime
import json
import sqlite3
import uuid

from studio.store.messages import MESSAGE_STATUSES

EXPORT_FORMAT = "m1-studio-session"
EXPORT_VERSION = 1
SESSION_FIELDS = ("title", "system_prompt", "settings", "replay_thinking", "created_at", "updated_at")
MESSAGE_FIELDS = ("id", "parent_id", "role", "content", "reasoning", "stats", "status", "selected", "created_at")
ATTACHMENT_FIELDS = ("id", "message_id", "name", "kind", "text", "num_tokens", "tokens_estimated", "num_bytes",
                     "created_at")
ROLES = ("user", "assistant", "tool")


def to_json(session: dict, messages: list[dict], attachments: list[dict]) -> dict:
    """Everything needed to rebuild the session: all branches, selection, stats and attachment texts."""
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
            "session": {field: session[field] for field in SESSION_FIELDS},
            "messages": [{field: m[field] for field in MESSAGE_FIELDS} for m in messages],
            "attachments": [{field: a[field] for field in ATTACHMENT_FIELDS} for a in attachments]}


def to_markdown(session: dict, path: list[dict], attachments: list[dict]) -> str:
    """The conversation as shown (active branch): reasoning folded in <details>, attachments listed per message."""
    lines = [f"# {session['title']}", "", f"*Exported from M1 Studio · created {_when(session['created_at'])} · "
             f"{len(path)} messages*", ""]
    if session["system_prompt"]:
        lines += ["## System", "", session["system_prompt"], ""]
    by_message: dict[int, list[dict]] = {}
    for attachment in attachments:
        by_message.setdefault(attachment["message_id"], []).append(attachment)
    for message in path:
        branch = f" (version {message['sibling_index']} of {message['sibling_count']})" \
            if message["sibling_count"] > 1 else ""
        lines += [f"## {message['role'].capitalize()}{branch}", ""]
        for attachment in by_message.get(message["id"], []):
            lines.append(f"📎 {attachment['name']} ({attachment['kind']}, {attachment['num_tokens']:,} tokens)")
            lines.append("")
        if message["reasoning"]:
            lines += ["<details><summary>Thinking</summary>", "", message["reasoning"], "", "</details>", ""]
        lines += [message["content"], ""]
    return "\n".join(lines).rstrip() + "\n"


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def parse_import(data: dict | str | bytes) -> dict:
    """Validate an exported session (dict or JSON text); return it as a dict. Raises ValueError naming the problem."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"import: the file is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ValueError(f"import: not an M1 Studio session export (expected format {EXPORT_FORMAT!r})")
    if data.get("version") != EXPORT_VERSION:
        raise ValueError(f"import: export version {data.get('version')!r} is not supported (expected {EXPORT_VERSION})")
    _require(data, "session", SESSION_FIELDS, "session")
    seen: set[int] = set()
    for index, message in enumerate(_list(data, "messages")):
        where = f"messages[{index}]"
        _require({"m": message}, "m", MESSAGE_FIELDS, where)
        if message["role"] not in ROLES or message["status"] not in MESSAGE_STATUSES:
            raise ValueError(f"import: {where} has role {message['role']!r} / status {message['status']!r}; "
                             f"expected one of {', '.join(ROLES)} / {', '.join(MESSAGE_STATUSES)}")
        if not all(isinstance(message[key], str) for key in ("content", "reasoning")):
            raise ValueError(f"import: {where} content and reasoning must be strings")
        if message["id"] in seen:
            raise ValueError(f"import: {where} repeats message id {message['id']!r}")
        if message["parent_id"] is not None and message["parent_id"] not in seen:
            raise ValueError(f"import: {where} refers to parent {message['parent_id']!r}, which does not come "
                             "before it in the file")
        seen.add(message["id"])
    for index, attachment in enumerate(_list(data, "attachments")):
        _require({"a": attachment}, "a", ATTACHMENT_FIELDS, f"attachments[{index}]")
        if attachment["message_id"] is not None and attachment["message_id"] not in seen:
            raise ValueError(f"import: attachments[{index}] refers to message {attachment['message_id']!r}, "
                             "which is not in the file")
    return data


def _list(data: dict, key: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise ValueError(f"import: {key!r} must be a list")
    return value


def _require(container: dict, key: str, fields: tuple, where: str) -> None:
    value = container.get(key)
    if not isinstance(value, dict):
        raise ValueError(f"import: {where} must be an object")
    missing = [field for field in fields if field not in value]
    if missing:
        raise ValueError(f"import: {where} lacks {', '.join(missing)}")


class ExportImport:
    """export_json / export_markdown / import_json for SessionStore."""

    def export_json(self, user_id: int, session_id: str) -> dict:
        """The complete session (all branches, selection, stats, attachment texts) as a JSON-ready dict."""
        return to_json(self.get_session(user_id, session_id), self.all_messages(user_id, session_id),
                       self.attachments(user_id, session_id, with_text=True))

    def export_markdown(self, user_id: int, session_id: str) -> str:
        """The conversation as shown (active branch) as readable Markdown; reasoning in <details> blocks."""
        return to_markdown(self.get_session(user_id, session_id), self.active_path(user_id, session_id),
                           self.attachments(user_id, session_id))

    def import_json(self, user_id: int, data: dict | str | bytes) -> str:
        """Create a session for user_id from an export (new ids, same tree and selection); returns its id.

        Validates everything first and writes in one transaction: a bad file raises ValueError and adds nothing.
        """
        data, session_id = parse_import(data), uuid.uuid4().hex
        meta = data["session"]
        try:
            with self._tx() as conn:
                conn.execute("INSERT INTO sessions (id, user_id, title, system_prompt, settings, replay_thinking, "
                             "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (session_id, user_id, meta["title"], meta["system_prompt"], json.dumps(meta["settings"]),
                              int(meta["replay_thinking"]), meta["created_at"], meta["updated_at"]))
                new_ids = {None: None}
                for m in data["messages"]:
                    new_ids[m["id"]] = conn.execute(
                        "INSERT INTO messages (session_id, parent_id, role, content, reasoning, stats, status, "
                        "selected, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (session_id, new_ids[m["parent_id"]], m["role"], m["content"], m["reasoning"],
                         json.dumps(m["stats"]), m["status"], int(m["selected"]), m["created_at"])).lastrowid
                for a in data["attachments"]:
                    conn.execute("INSERT INTO attachments (session_id, message_id, original_name, kind, text, "
                                 "num_tokens, tokens_estimated, num_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
                                 "?, ?)", (session_id, new_ids[a["message_id"]], a["name"], a["kind"], a["text"],
                                           a["num_tokens"], int(a["tokens_estimated"]), a["num_bytes"],
                                           a["created_at"]))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"import: the file breaks the session tree ({exc}); two selected versions of one "
                             "message, or a duplicate message id?") from None
        return session_id
