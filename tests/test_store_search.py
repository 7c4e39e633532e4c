"""Search on the real SQLite store, pinned down where mutation testing found it loose: wildcard and quote escaping,
every field of a hit, title-before-content with one limit, non-ASCII case folding and the exact snippet."""
import pytest

from studio.store.search import search_sessions
from studio.store.store import SessionStore


@pytest.fixture
def store(tmp_path):
    store = SessionStore(tmp_path / "sessions.db")
    yield store
    store.close()


def said(store, user, title, content, answer="ok"):
    """A session titled `title` whose one turn asks `content`; returns (session_id, user_message_id)."""
    sid = store.create_session(user, title)["id"]
    user_msg, reply = store.add_turn(user, sid, content)
    store.update_message(user, reply, content=answer, status="done")
    return sid, user_msg


def titles(store, user, query, **kw):
    return sorted(hit["title"] for hit in store.search(user, query, **kw))


def test_like_wildcards_and_backslashes_are_searched_literally(store):
    alice = store.ensure_user("alice")
    for title in ("5% off", "50 off", "a_b", "axb", "C:\\temp", "C:temp"):
        store.create_session(alice, title)
    assert titles(store, alice, "5%") == ["5% off"]
    assert titles(store, alice, "a_b") == ["a_b"]
    assert titles(store, alice, "C:\\t") == ["C:\\temp"]
    assert titles(store, alice, "C:t") == ["C:temp"]
    said(store, alice, "Plain", "it costs 7% more")  # the content LIKE path (queries under 3 characters)
    assert titles(store, alice, "7%") == ["Plain"] and titles(store, alice, "0%") == []


def test_quotes_in_a_query_are_searched_literally(store):
    alice = store.ensure_user("alice")
    said(store, alice, "Quotes", 'He said "yes" twice')
    assert titles(store, alice, '"yes"') == ["Quotes"]
    assert titles(store, alice, 'said "') == ["Quotes"]
    assert titles(store, alice, '"no"') == []


def test_every_field_of_a_title_hit_and_of_a_content_hit(store):
    alice = store.ensure_user("alice")
    trip = store.create_session(alice, "Trip to Kyoto")["id"]
    notes, first = said(store, alice, "Notes", "kyoto in spring")
    second, _ = store.add_turn(alice, notes, "kyoto in autumn, again")
    title_hit, content_hit = store.search(alice, "Kyoto")
    assert title_hit == {"session_id": trip, "title": "Trip to Kyoto", "matched": "title", "message_id": None,
                         "snippet": "Trip to Kyoto", "updated_at": store.get_session(alice, trip)["updated_at"]}
    assert content_hit == {"session_id": notes, "title": "Notes", "matched": "content", "message_id": second,
                           "snippet": "kyoto in autumn, again",  # the newest matching message
                           "updated_at": store.get_session(alice, notes)["updated_at"]}
    assert first < second


def test_a_session_matching_by_title_and_content_is_one_title_hit(store):
    alice = store.ensure_user("alice")
    sid, _ = said(store, alice, "Kyoto", "kyoto maple season")
    assert [(h["session_id"], h["matched"], h["message_id"]) for h in store.search(alice, "kyoto")] == \
        [(sid, "title", None)]


def test_one_limit_counts_title_and_content_hits_together(store):
    alice = store.ensure_user("alice")
    said(store, alice, "Other", "about kyoto")
    store.create_session(alice, "Kyoto")
    assert [h["matched"] for h in store.search(alice, "kyoto")] == ["title", "content"]
    assert [h["matched"] for h in store.search(alice, "kyoto", limit=1)] == ["title"]


def test_the_default_limit_is_fifty(store):
    alice = store.ensure_user("alice")
    for n in range(51):
        store.create_session(alice, f"Note {n}")
    assert len(store.search(alice, "note")) == 50 and len(store.search(alice, "note", limit=51)) == 51


def test_content_search_folds_non_ascii_case(store):
    if not store.has_fts:
        pytest.skip("this SQLite has no FTS5 trigram index; LIKE folds ASCII case only")
    alice = store.ensure_user("alice")
    said(store, alice, "Colours", "Die Ampel ist GRÜN, über alles")
    assert titles(store, alice, "grün") == ["Colours"]
    assert titles(store, alice, "ÜBE") == ["Colours"]  # three characters: the shortest query the index answers


@pytest.mark.parametrize("use_fts", [True, False])
def test_titles_and_short_or_unindexed_queries_fold_non_ascii_case(store, use_fts):
    alice = store.ensure_user("alice")
    said(store, alice, "GRÜNE Notizen", "nothing here")
    said(store, alice, "Maße", "Ärger im Büro")
    assert titles(store, alice, "grüne") == ["GRÜNE Notizen"]
    assert titles(store, alice, "MASSE") == ["Maße"]  # casefold: ß is ss
    content = lambda q: [h["title"] for h in search_sessions(store._conn, alice, q, use_fts=use_fts)]  # noqa: E731
    assert content("är") == ["Maße"]  # two characters: LIKE, not the index
    assert content("BÜRO") == ["Maße"]  # the index, or (use_fts=False, as on a SQLite without FTS5) LIKE
    assert titles(store, alice, "grün_") == []  # the wildcard stays literal after folding


def snippet_of(store, user, content, query):
    said(store, user, "S", content)
    hit, = store.search(user, query)
    return hit["snippet"]


def test_snippet_is_sixty_characters_around_the_first_match_with_ellipses(store):
    alice = store.ensure_user("alice")
    text = "A" * 100 + "needle" + "B" * 100
    assert snippet_of(store, alice, text, "NEEDLE") == "…" + "A" * 60 + "needle" + "B" * 60 + "…"


def test_snippet_of_a_match_at_the_start_has_no_leading_ellipsis_and_uses_the_first_match(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    alice = store.ensure_user("alice")
    assert snippet_of(store, alice, "needle" + "C" * 200 + "needle", "needle") == "needle" + "C" * 60 + "…"
    store.close()


def test_snippet_of_a_match_at_the_end_has_no_trailing_ellipsis(store):
    alice = store.ensure_user("alice")
    assert snippet_of(store, alice, "D" * 100 + "needle", "needle") == "…" + "D" * 60 + "needle"


def test_a_match_the_snippet_cannot_place_shows_the_start_of_the_message(store):
    if not store.has_fts:
        pytest.skip("needs the FTS5 index (its case folding maps final sigma to sigma; Python's lower() does not)")
    alice = store.ensure_user("alice")
    text = "ΟΔΟΣ " + "Z" * 200
    assert snippet_of(store, alice, text, "οδοσ") == text[:120]
