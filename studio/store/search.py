"""Search a user's sessions by title (substring) and by message content (FTS5 trigram index, else LIKE)."""
import sqlite3

SNIPPET_CHARS = 60
MIN_FTS_CHARS = 3  # the trigram tokenizer cannot match shorter queries; those use LIKE
MAX_QUERY_CHARS = 256  # a search box query; longer LIKE patterns are refused by SQLite


def search_sessions(conn: sqlite3.Connection, user_id: int, query: str, *, limit: int = 50,
                    use_fts: bool = True) -> list[dict]:
    """Sessions matching `query`, case-insensitive substring: title matches first, then content matches, each
    newest first. Result dicts: session_id, title, updated_at, matched ('title'|'content'), message_id, snippet."""
    query = clean_query(query)
    if not query:
        return []
    folded = query.casefold()
    pattern = "%" + folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    results: dict[str, dict] = {}
    for row in conn.execute("SELECT id, title, updated_at FROM sessions WHERE user_id = ? AND casefold(title) LIKE ? "
                            "ESCAPE '\\' ORDER BY updated_at DESC LIMIT ?", (user_id, pattern, limit)):
        results[row["id"]] = {"session_id": row["id"], "title": row["title"], "updated_at": row["updated_at"],
                              "matched": "title", "message_id": None, "snippet": row["title"]}
    for row in _content_matches(conn, user_id, query, pattern, limit, use_fts):
        if row["session_id"] not in results and len(results) < limit:
            results[row["session_id"]] = {"session_id": row["session_id"], "title": row["title"],
                                          "updated_at": row["updated_at"], "matched": "content",
                                          "message_id": row["id"], "snippet": snippet(row["content"], query)}
    return list(results.values())


def register_functions(conn: sqlite3.Connection) -> None:
    """`casefold(text)` in SQL: LIKE folds ASCII case only, so both sides are folded in Python (`GRÜN` matches
    `grün`); FTS5's trigram tokenizer folds Unicode case itself."""
    conn.create_function("casefold", 1, lambda text: text.casefold() if isinstance(text, str) else text,
                         deterministic=True)


def clean_query(query: str) -> str:
    """A search box's text as SQLite can take it: control characters dropped (a NUL ends an SQL string early),
    surrounding space stripped, at most MAX_QUERY_CHARS characters (a longer LIKE pattern is refused as too complex)."""
    text = "".join(ch for ch in str(query) if ch >= " " or ch in "\t\n")
    return text.strip()[:MAX_QUERY_CHARS].strip()


def _content_matches(conn, user_id: int, query: str, pattern: str, limit: int, use_fts: bool):
    columns = "max(m.id) AS id, m.session_id, m.content, s.title, s.updated_at"  # content of the newest hit
    order = "GROUP BY m.session_id ORDER BY s.updated_at DESC LIMIT ?"
    if use_fts and len(query) >= MIN_FTS_CHARS:
        phrase = '"' + query.replace('"', '""') + '"'
        return conn.execute(f"SELECT {columns} FROM message_search JOIN messages m ON m.id = message_search.rowid "
                            f"JOIN sessions s ON s.id = m.session_id WHERE message_search MATCH ? AND s.user_id = ? "
                            f"{order}", (phrase, user_id, limit)).fetchall()
    return conn.execute(f"SELECT {columns} FROM messages m JOIN sessions s ON s.id = m.session_id "
                        f"WHERE s.user_id = ? AND casefold(m.content) LIKE ? ESCAPE '\\' {order}",
                        (user_id, pattern, limit)).fetchall()


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """About `width` characters on each side of the first case-insensitive occurrence of query, with ellipses."""
    at = text.lower().find(query.lower())
    if at < 0:
        return text[:2 * width]
    start, end = max(0, at - width), min(len(text), at + len(query) + width)
    return ("…" if start else "") + " ".join(text[start:end].split()) + ("…" if end < len(text) else "")
