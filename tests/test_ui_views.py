"""Tests of the studio's view-model functions (studio/ui/views.py, studio/ui/views_html.py): plain data in, page data out.

    .venv/bin/python -m pytest -q tests/test_ui_views.py
"""
import re
from types import SimpleNamespace

import pytest

from studio.ui import views, views_html
from studio.store.budget import summarize


def test_human_tokens_and_seconds():
    assert [views.human_tokens(n) for n in (0, 950, 1000, 12_400, 99_960, 412_345, 1_000_000, 1_050_000)] == \
        ["0", "950", "1k", "12.4k", "100k", "412k", "1M", "1.05M"]
    assert [views.human_seconds(s) for s in (0.42, 4.25, 41.2, 125, 120)] == \
        ["0.42 s", "4.2 s", "41 s", "2 min 5 s", "2 min"]
    with pytest.raises(ValueError, match="-3"):
        views.human_tokens(-3)


def test_thought_panel_pending_then_done():
    live = views.thought_message("step one", pending=True, seconds=3.0, tokens=1234)
    assert live["metadata"]["status"] == "pending" and live["metadata"]["title"] == "Thinking…"
    assert "1,234 tokens" in live["metadata"]["log"]
    done = views.thought_message("step one", pending=False, seconds=41.0, tokens=12_400)
    assert done["metadata"] == {"title": "Thought for 41 s · 12.4k tokens", "status": "done"}
    assert done["content"] == "step one"


def test_stats_panel_names_ttft_speed_and_reuse():
    stats = {"ttft": 0.42, "tokens_per_s": 31.46, "cached_tokens": 812, "prompt_tokens": 1024,
             "completion_tokens": 300, "reasoning_tokens": 200, "seconds": 10.0}
    panel = views.stats_message(stats)
    assert panel["metadata"]["title"] == "TTFT 0.42 s · 31.5 tok/s · 812 cached"
    assert "| prompt tokens | 1,024 |" in panel["content"] and "| total time | 10 s |" in panel["content"]
    assert views.stats_message({}) is None
    stopped = views.stats_message({"ttft": 0.2, "cached_tokens": None, "seconds": None, "prompt_tokens": 9})
    assert stopped["metadata"]["title"] == "TTFT 0.20 s" and "| prompt tokens | 9 |" in stopped["content"]


def _message(mid, role, content, reasoning="", stats=None, status="done"):
    return {"id": mid, "role": role, "content": content, "reasoning": reasoning, "stats": stats or {},
            "status": status, "sibling_index": 1, "sibling_count": 1}


def test_transcript_maps_rows_to_store_ids_and_hides_long_reasoning():
    path = [_message(1, "user", "hi"),
            _message(2, "assistant", "hello", "x" * 5000, {"reasoning_tokens": 900, "thinking_seconds": 3.0}),
            _message(3, "user", "again"),
            _message(4, "assistant", "sure", "short thought", {"reasoning_tokens": 3}, status="stopped")]
    docs = [{"message_id": 1, "name": "report.pdf", "num_tokens": 12_400}]
    rows, ids = views.transcript(path, docs)
    assert ids == [1, 2, 2, 3, 4, 4]
    assert "report.pdf" in rows[0]["content"] and "12.4k tokens" in rows[0]["content"]
    assert "x" * 100 not in rows[1]["content"] and "Load earlier thinking" in rows[1]["content"]
    assert rows[1]["metadata"]["title"].startswith("Thought for 3.0 s")
    assert rows[4]["content"] == "short thought" and rows[5]["content"].endswith("*Stopped.*")
    rows, _ = views.transcript(path, docs, show_reasoning=True)
    assert rows[1]["content"] == "x" * 5000


def test_transcript_keeps_only_the_last_messages():
    path = [_message(i, "user" if i % 2 else "assistant", f"m{i}") for i in range(1, 11)]
    rows, ids = views.transcript(path, limit=4)
    assert ids[0] == -1 and "6 earlier messages" in rows[0]["content"]
    assert [r["content"] for r in rows[1:]] == ["m7", "m8", "m9", "m10"]


def test_live_reply_streams_thinking_then_collapses():
    now = [100.0]
    live = views.LiveReply(lambda: now[0])
    live.feed(SimpleNamespace(kind="prefill", done=512, total=2048, eta_s=3.0))
    assert live.progress == (512, 2048, 3.0) and live.rows() == [{"role": "assistant", "content": "…"}]
    live.feed(SimpleNamespace(kind="reasoning", text="Let me think"))
    now[0] = 104.0
    live.feed(SimpleNamespace(kind="reasoning", text=" more"))
    (panel,) = live.rows()
    assert live.progress is None and panel["metadata"]["status"] == "pending"
    assert panel["content"] == "Let me think more" and "2 tokens" in panel["metadata"]["log"]
    live.feed(SimpleNamespace(kind="answer", text="42"))
    assert live.rows()[0]["metadata"]["status"] == "done" and live.rows()[1]["content"] == "42"
    live.feed(SimpleNamespace(kind="done", status="done", text="", message_id=7,
                    stats={"ttft": 0.5, "tokens_per_s": 9.0, "cached_tokens": 0, "reasoning_tokens": 2,
                           "thinking_seconds": 4.0}))
    rows = live.rows()
    assert live.finished and live.message_id == 7
    assert rows[0]["metadata"]["title"] == "Thought for 4.0 s · 2 tokens"
    assert rows[-1]["metadata"]["title"].startswith("TTFT 0.50 s")


def test_live_reply_error_is_shown():
    live = views.LiveReply(lambda: 0.0)
    live.feed(SimpleNamespace(kind="error", text="This turn does not fit", status="refused", stats=None))
    assert live.finished and live.rows()[-1]["content"] == "**Error:** This turn does not fit"


def test_budget_meter_levels_and_overflow_message():
    ok = summarize(system=100, documents=[{"name": "a", "tokens": 1000, "pending": True}], history=500, template=10,
                   reserved_output=8000, window=100_000)
    html = views_html.budget_html(ok)
    assert 'class="m1-meter ok"' in html and "9.6k / 100k tokens (10%)" in html and "Documents 1k" in html
    over = summarize(system=0, documents=[{"name": "big", "tokens": 95_000, "pending": True}], history=0,
                     template=0, reserved_output=8000, window=100_000)
    html = views_html.budget_html(over)
    assert 'class="m1-meter over"' in html and 'data-fits="false"' in html
    assert "Over the context window by 3,000 tokens" in html
    widths = [float(w) for w in re.findall(r"width:([\d.]+)%", html)]
    assert all(w <= 100 for w in widths)


def test_chips_progress_and_escaping():
    chips = views_html.chips_html([{"name": "<b>x</b>.pdf", "kind": "pdf", "num_tokens": 830_000,
                                    "tokens_estimated": True}])
    assert "&lt;b&gt;x&lt;/b&gt;.pdf" in chips and "~830k tokens" in chips
    assert views_html.chips_html([]) == ""
    bar = views_html.progress_html("reading", 412_000, 830_000, 95.0)
    assert "reading 412k / 830k tokens, ~1 min 35 s" in bar
    assert 'aria-valuenow="50"' in bar
    assert views.eta_seconds(412, 830, 47.0) == pytest.approx(47.7, abs=0.1)
    assert views.eta_seconds(0, 830, 1.0) is None


def test_share_page_escapes_and_leaves_out_what_was_not_shared():
    shared = {"title": "<script>t</script>", "created_at": 0.0, "documents": [{"name": "a.pdf", "kind": "pdf",
              "num_tokens": 10}], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    page = views_html.share_html(shared, render_markdown=lambda text: f"<p>{text}</p>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "Thinking" not in page and "<pre>" not in page and "a.pdf" in page
    shared["messages"][1]["reasoning"] = "because"
    assert "<summary>Thinking</summary><p>because</p>" in views_html.share_html(shared, lambda t: f"<p>{t}</p>")


def test_session_lists_and_version_label():
    assert views.session_choices([{"id": "s1", "title": "A"}]) == [("A", "s1")]
    hits = [{"session_id": "s1", "title": "A", "matched": "content", "snippet": "…foo…"}]
    assert views.search_choices(hits) == [("A — …foo…", "s1")]
    assert views.version_label({"role": "assistant", "sibling_index": 2, "sibling_count": 3}) == \
        "Reply · version 2 of 3"
    banner = views.banner_html(random_weights=True, state_reuse=True, model_name="tiny")
    assert "random" in banner and "State reuse is on" in banner
    noted = views.banner_html(random_weights=True, state_reuse=False, model_name="t", note="RANDOM <weights>")
    assert "RANDOM &lt;weights&gt;" in noted and "State reuse is off" in noted and "is on" not in noted


def test_share_url_follows_the_proxy_and_root_path():
    from studio.ui.session import share_url
    direct = SimpleNamespace(headers={"host": "127.0.0.1:7860"})
    assert share_url(direct, "", "tok") == "http://127.0.0.1:7860/share/tok"
    proxied = SimpleNamespace(headers={"Host": "upstream", "X-Forwarded-Host": "chat.example.com",
                                       "X-Forwarded-Proto": "https"})
    assert share_url(proxied, "/studio/", "tok") == "https://chat.example.com/studio/share/tok"


def test_display_text_drops_control_characters_and_shows_tags_as_text():
    text = "a\x06b <end_of_document> x < y\n```html\n<b>bold</b>\n```\nand `<i>` inline\ttab"
    shown = views.display_text(text)
    assert shown == "ab &lt;end_of_document> x &lt; y\n```html\n<b>bold</b>\n```\nand `<i>` inline\ttab"
    assert views.display_text("```\n<open fence") == "```\n<open fence"
