"""Per-user defaults for new chats: one JSON object per user in the sessions database (table user_defaults,
created on first use). The store keeps plain dicts; studio.chat_settings gives them meaning.

    defaults = UserDefaults(store)
    defaults.save(user_id, {"temperature": 0.7, ...}); defaults.get(user_id)  # -> dict, or None when never saved
"""
import json
import time

SCHEMA = ("CREATE TABLE IF NOT EXISTS user_defaults (user_id INTEGER PRIMARY KEY REFERENCES users(id) "
          "ON DELETE CASCADE, settings TEXT NOT NULL, updated_at REAL NOT NULL)")


class UserDefaults:
    """Defaults for new chats of each user, kept beside the sessions (same SQLite file and lock)."""

    def __init__(self, store):
        self.store = store
        with store._tx() as conn:
            conn.execute(SCHEMA)

    def get(self, user_id: int) -> dict | None:
        """The user's saved defaults, or None when none were saved."""
        rows = self.store._rows("SELECT settings FROM user_defaults WHERE user_id = ?", user_id)
        return json.loads(rows[0]["settings"]) if rows else None

    def save(self, user_id: int, settings: dict) -> None:
        """Replace the user's defaults (a JSON-ready dict)."""
        with self.store._tx() as conn:
            conn.execute("INSERT INTO user_defaults (user_id, settings, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(user_id) DO UPDATE SET settings = excluded.settings, "
                         "updated_at = excluded.updated_at", (user_id, json.dumps(settings), time.time()))
