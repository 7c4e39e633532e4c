"""The token budget (studio/store/budget.py and SessionStore.budget), pinned down where mutation testing found it
loose: LRU memoising per counter, summarize's limits (an exact fit fits, a zero window is refused), and the store's
budget of a draft alone and of the template overhead."""
from types import SimpleNamespace

import pytest

from studio.store.budget import DEFAULT_WINDOW, CountCache, summarize
from studio.store.store import SessionStore


class Counter:
    """A real counter (characters) that records which texts it was asked to count."""

    def __init__(self):
        self.asked = []

    def __call__(self, text: str) -> int:
        self.asked.append(text)
        return len(text)


def test_each_text_is_counted_once_and_the_least_recently_used_goes_first():
    cache, counter = CountCache(max_entries=2), Counter()
    assert [cache.count(counter, t) for t in ("aa", "bbb", "aa")] == [2, 3, 2]
    assert counter.asked == ["aa", "bbb"]  # two entries fit: "aa" came from the cache
    cache.count(counter, "c")  # over the limit: "bbb" is the least recently used ("aa" was just read)
    assert counter.asked == ["aa", "bbb", "c"]
    assert cache.count(counter, "aa") == 2 and counter.asked == ["aa", "bbb", "c"]
    assert cache.count(counter, "bbb") == 3 and counter.asked == ["aa", "bbb", "c", "bbb"]


def test_the_empty_text_is_zero_tokens_without_asking_the_counter():
    cache, counter = CountCache(), Counter()
    assert cache.count(counter, "") == 0 and counter.asked == []


def test_texts_of_one_length_are_counted_apart():
    cache, words = CountCache(), lambda text: len(text.split())
    assert [cache.count(words, t) for t in ("a b c", "abcde")] == [3, 1]


def test_two_counters_do_not_share_counts():
    cache = CountCache()
    assert cache.count(len, "four") == 4
    assert cache.count(lambda text: 1, "four") == 1


def test_summarize_adds_the_parts_and_an_exact_fit_fits():
    docs = [{"name": "a", "tokens": 5, "pending": False}, {"name": "b", "tokens": 7, "pending": True}]
    budget = summarize(system=1, documents=docs, history=10, template=3, reserved_output=4, window=30)
    assert budget == {"window": 30, "system": 1, "documents": docs, "documents_total": 12, "history": 10,
                      "template": 3, "reserved_output": 4, "total": 30, "remaining": 0, "fits": True, "overflow": 0}
    over = summarize(system=1, documents=docs, history=10, template=3, reserved_output=5, window=30)
    assert (over["remaining"], over["fits"], over["overflow"]) == (-1, False, 1)
    assert summarize(system=0, documents=[], history=0, template=0, reserved_output=0)["window"] == DEFAULT_WINDOW
    assert summarize(system=0, documents=[], history=0, template=0, reserved_output=1, window=1)["fits"]


@pytest.mark.parametrize("reserved,window", [(-1, 10), (0, 0), (0, -5)])
def test_summarize_refuses_a_negative_reserve_or_an_empty_window(reserved, window):
    with pytest.raises(ValueError, match=rf"^reserved_output must be >= 0 and window > 0, got {reserved} and "
                                         rf"{window}$"):
        summarize(system=0, documents=[], history=0, template=0, reserved_output=reserved, window=window)


def test_the_store_budget_counts_a_draft_alone_and_the_template_overhead_exactly(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    alice = store.ensure_user("alice")
    sid = store.create_session(alice, system_prompt="Be brief.")["id"]
    sent = store.add_attachment(alice, sid, SimpleNamespace(name="a.txt", kind="text", text="abc", num_tokens=1,
                                                            num_bytes=3, tokens_estimated=False))
    store.add_turn(alice, sid, "", attachment_ids=[sent])  # a message that is only a document
    assert store.prompt_messages(alice, sid)[1] == {"role": "user", "content": '<document name="a.txt">\nabc\n'
                                                                               '</document>'}
    plain = store.budget(alice, sid, len, reserved_output=0)
    assert [d["pending"] for d in plain["documents"]] == [False] and plain["template"] == 0
    drafted = store.budget(alice, sid, len, reserved_output=0, draft="hello", overhead_per_message=7)
    assert drafted["history"] == plain["history"] + len("hello")  # a draft without uploads still counts
    assert drafted["template"] == 7 * 4  # system, the document turn, its empty reply, the draft
    store.add_turn(alice, sid, "both", attachment_ids=[store.add_attachment(
        alice, sid, SimpleNamespace(name="b.txt", kind="text", text="b", num_tokens=1, num_bytes=1,
                                    tokens_estimated=False))])
    joined = store.budget(alice, sid, len, reserved_output=0, overhead_per_message=1)
    assert joined["template"] == 1 * 5 + 1 * len("\n")  # b.txt's block and "both" are joined by one newline
    doubled = store.budget(alice, sid, lambda text: 2 * len(text), reserved_output=0)
    assert doubled["template"] == 2  # the one joining newline, counted by the counter
    with pytest.raises(ValueError, match=r"^message 999 is not on the active path of session '[0-9a-f]+'$"):
        store.prompt_messages(alice, sid, before=999)
    store.close()
