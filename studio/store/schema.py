"""SQLite schema of the session store, versioned with PRAGMA user_version and upgraded by `migrate`.

Version 1: users, sessions, messages (a tree: parent_id + one `selected` child per parent), attachments.
Version 2: full-text search over message content (FTS5 trigram index kept in sync by triggers) when this SQLite
build has FTS5 with the trigram tokenizer; on builds without it the step is a no-op and search falls back to LIKE.
"""
import sqlite3

_V1 = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    replay_thinking INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    share_token TEXT UNIQUE,
    share_reasoning INTEGER NOT NULL DEFAULT 1,
    share_documents INTEGER NOT NULL DEFAULT 0,
    share_expires_at REAL,
    share_leaf_id INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id, updated_at);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content TEXT NOT NULL DEFAULT '',
    reasoning TEXT NOT NULL DEFAULT '',
    stats TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'done',
    selected INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL
);
CREATE INDEX messages_by_parent ON messages(session_id, parent_id);
CREATE UNIQUE INDEX one_selected_sibling ON messages(session_id, ifnull(parent_id, 0)) WHERE selected = 1;
CREATE TABLE attachments (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    message_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    original_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    num_tokens INTEGER NOT NULL,
    tokens_estimated INTEGER NOT NULL DEFAULT 0,
    num_bytes INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX attachments_by_session ON attachments(session_id, message_id);
"""

_V2_FTS = """
CREATE VIRTUAL TABLE message_search USING fts5(content, content='messages', content_rowid='id', tokenize='trigram');
CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
    INSERT INTO message_search(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
    INSERT INTO message_search(message_search, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER message_search_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO message_search(message_search, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO message_search(rowid, content) VALUES (new.id, new.content);
END;
INSERT INTO message_search(message_search) VALUES ('rebuild');
"""


def _v1(conn: sqlite3.Connection) -> None:
    _run_script(conn, _V1)


def _v2(conn: sqlite3.Connection) -> None:
    if fts5_trigram_available(conn):
        _run_script(conn, _V2_FTS)


MIGRATIONS = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


def fts5_trigram_available(conn: sqlite3.Connection) -> bool:
    """True when this SQLite build can create an FTS5 table with the trigram tokenizer (SQLite >= 3.34)."""
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x, tokenize='trigram')")
        conn.execute("DROP TABLE temp.fts5_probe")
        return True
    except sqlite3.OperationalError:
        return False


def has_search_index(conn: sqlite3.Connection) -> bool:
    """True when the database has the FTS5 message index (built by migration 2)."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'message_search'").fetchone()
    return row is not None


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's PRAGMA user_version."""
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply migrations up to `target`, each in its own transaction; return the new version.

    Raises RuntimeError when the file was written by a newer build (its version is above SCHEMA_VERSION).
    """
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"session database schema version {version} is newer than this build supports "
                           f"({SCHEMA_VERSION}); upgrade M1 Studio")
    for number in range(version + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) < number:  # another process may have migrated meanwhile
                MIGRATIONS[number - 1](conn)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ;-separated statements inside the caller's transaction (executescript would commit it)."""
    statement = ""
    for line in script.strip().splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
