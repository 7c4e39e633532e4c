"""Plain functions behind the studio UX pass (issue 16): version links, the queued note, defaults and overrides,
the "no answer" marker, SVG icons, and the state cache taking back disk snapshots of an earlier run.

    .venv/bin/python -m pytest -q tests/test_ui_ux.py
"""
import pytest

from engine.serving.state_cache import StateCache
from studio.chat_settings import SYSTEM_PRESETS, ChatSettings
from studio.ui import icons, views
from studio.ui.defaults import overrides, overrides_html, preset_of
from studio.ui.queue import queued_html
from studio.ui.versions import parse_action, version_links, with_version_rows


def _msg(mid, role, index=1, count=1):
    return {"id": mid, "role": role, "sibling_index": index, "sibling_count": count}


def test_version_rows_follow_the_last_row_of_each_message_with_siblings():
    path = [_msg(1, "user"), _msg(2, "assistant", 2, 3), _msg(3, "user", 1, 2), _msg(4, "assistant")]
    rows = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "thought"},
            {"role": "assistant", "content": "answer"}, {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"}]
    out, ids = with_version_rows(rows, [1, 2, 2, 3, 4], path)
    assert ids == [1, 2, 2, 2, 3, 3, 4]
    assert out[3]["role"] == "assistant" and "2/3" in out[3]["content"] and "#m1v:-1:2" in out[3]["content"]
    assert out[5]["role"] == "user" and "1/2" in out[5]["content"] and "#m1v:1:3" in out[5]["content"]
    assert version_links(_msg(9, "user")) == ""


def test_version_actions_parse_only_our_links():
    assert parse_action("m1v:-1:42:1700000000") == (-1, 42) and parse_action("m1v:1:7") == (1, 7)
    for bad in ("", None, "m1v:2:4", "m1v:-1:x", "javascript:alert(1)"):
        assert parse_action(bad) is None


def test_queued_note_escapes_and_shortens():
    note = queued_html("<b>" + "x" * 300)
    assert "&lt;b&gt;" in note and "…" in note and "Queued:" in note


def test_defaults_overrides_and_presets():
    assert preset_of(SYSTEM_PRESETS["Math"]) == "Math" and preset_of("You are terse.") == "Custom"
    base = ChatSettings()
    assert overrides(base, ChatSettings()) == []
    changed = overrides(ChatSettings(temperature=0.5, max_tokens=64), base)
    assert changed == ["Temperature", "Max output tokens"]
    assert "Temperature, Max output tokens" in overrides_html(changed) and "uses your defaults" in overrides_html([])


def test_no_answer_marker_only_when_a_finished_reply_has_only_thinking():
    rows = views.answer_messages("", "thinking…", {"reasoning_tokens": 12}, "done")
    assert rows[-1]["content"] == views.NO_ANSWER
    assert views.NO_ANSWER not in str(views.answer_messages("hi", "thinking…", {}, "done"))
    stopped = views.answer_messages("", "thinking…", {"reasoning_tokens": 3, "ttft": 0.1, "cached_tokens": 40},
                                    "stopped")
    assert stopped[1]["content"].endswith("*Stopped.*") and "40 cached" in stopped[2]["metadata"]["title"]


def test_icons_are_svg_files():
    for name in ("stop", "answer-now", "regenerate", "attach", "warning", "reuse"):
        assert icons.icon(name).startswith("<svg") and 'aria-hidden="true"' in icons.icon(name)
    with pytest.raises(FileNotFoundError):
        icons.icon_path("nope")


def test_state_cache_adopts_snapshots_into_a_tier():
    moved = []
    cache = StateCache([("device", 100), ("host", 100), ("disk", 50)], mover=lambda e, s, d: moved.append((s, d)))
    entry = cache.adopt(list(range(40)), "/tmp/snap-a.pt", 30, "disk")
    assert entry is not None and entry.tier == "disk"
    assert cache.lookup(list(range(50)))[1] == 40  # found as a prefix of a longer prompt
    assert cache.adopt(list(range(40)), "/tmp/snap-b.pt", 30, "disk") is None  # already kept
    assert cache.adopt(list(range(10)), "/tmp/snap-c.pt", 60, "disk") is None  # over the tier's cap
    assert moved == []
