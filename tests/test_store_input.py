"""Hostile search input on the real SQLite store: NUL bytes and 100k-character queries are answered, not raised,
and a NUL no longer turns a query into "match everything"."""
from studio.store.search import MAX_QUERY_CHARS
from studio.store.store import SessionStore


def test_nul_bytes_and_huge_queries_are_answered(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    uid = store.ensure_user("alice")
    sid = store.create_session(uid, "Travel plans")["id"]
    store.add_turn(uid, sid, "Where is the Eiffel tower?")
    assert store.search(uid, "\x00") == []  # once a NUL cut the LIKE pattern to '%': every session matched
    assert [r["session_id"] for r in store.search(uid, "Eif\x00fel")] == [sid]
    assert store.search(uid, "x" * 100_000) == [] and store.search(uid, "\x00" * 50_000) == []
    long_hit = "Travel plans" + " " * (MAX_QUERY_CHARS + 10) + "zzz"
    assert [r["session_id"] for r in store.search(uid, long_hit)] == [sid]  # cut to the first 256 characters
    store.close()
