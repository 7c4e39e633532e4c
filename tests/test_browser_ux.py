"""The studio UX pass (issue 16) in a real browser: versions under their message, Send xor Stop with a visible
queue, the trash deleting the chat, one-step export, SVG icons, empty/stopped replies, accessibility (axe-core),
and the phone layout (390x844).

    .venv/bin/python -m pytest -q tests/test_browser_ux.py

One server for the module with a pool of logins (tests/browser_users.py): every test logs in as a user of its own
(its own chats and defaults, its own browser context), so each passes alone and in any order. Waits are on positive
signals; an absence is asserted only after the page shows it has updated.
"""
import re

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser_fixtures import (PHONE, axe_serious, browser, expect, open_settings, send, set_limits,  # noqa: F401
                                    stop_if_streaming, wait_finished)
from tests.browser_users import fresh_page, login, phone, studio  # noqa: F401

# emoji and the symbols the page used as icons (⏭ ⏹ ⏱ ⚠ ♻ ↻ ◀ ▶ ■ 📎); Gradio's own accordion arrow ▼ is a font glyph
EMOJI = re.compile("[\u21bb\u25a0\u25b6\u25c0\u2300-\u23ff\u2600-\u27bf\U0001f000-\U0001faff]")


def new_chat(page) -> None:
    """Start a new empty chat: when one with messages is open, "+ New chat" (on a phone the sidebar opens first and
    closes by itself), until its rows are gone. A fresh login already shows an empty new chat: nothing to click (the
    click's answer would then change nothing on the page, so no signal says it arrived, and arriving late it would
    reset the settings set after it)."""
    if not page.locator("#m1-chat .message-row").count():
        return
    phone = page.viewport_size["width"] < 700
    if phone and not page.locator("#m1-sidebar.open").count():
        page.locator("#m1-sidebar .toggle-button").click()
        page.locator("#m1-sidebar.open").wait_for()
    page.locator("#m1-new").click()
    if phone:
        page.locator("#m1-sidebar.open").wait_for(state="detached")  # it closes by itself
    page.wait_for_function("() => !document.querySelector('#m1-chat .message-row')")


def new_chat_with_reply(page, text: str, max_tokens: int = 24, thinking_budget: int = 8) -> None:
    new_chat(page)
    set_limits(page, max_tokens=max_tokens, thinking_budget=thinking_budget)
    send(page, text)
    wait_finished(page)


def test_versions_sit_under_their_message_and_act_on_it(fresh_page):
    page = fresh_page
    new_chat_with_reply(page, "Version me")
    chat = page.locator("#m1-chat")
    assert chat.get_by_role("link", name="Previous version").count() == 0  # one version: no links
    page.locator("#m1-regenerate").click()
    chat.get_by_text("2/2").wait_for(timeout=90_000)
    wait_finished(page)
    chat.get_by_role("link", name="Previous version").click()
    chat.get_by_text("1/2").wait_for()
    chat.get_by_role("link", name="Next version").click()
    chat.get_by_text("2/2").wait_for()
    assert not page.locator("#m1-prev, #m1-next").count()  # no global arrows acting on "the selected" message


def test_send_xor_stop_and_a_message_sent_while_streaming_is_queued(fresh_page):
    page = fresh_page
    try:
        _send_stop_and_queue(page)
    finally:
        stop_if_streaming(page)


def _send_stop_and_queue(page) -> None:
    composer = page.locator("#m1-composer")
    assert composer.locator(".submit-button").is_visible() and not composer.locator(".stop-button").is_visible()
    assert not page.locator("#m1-stop").is_visible() and not page.locator("#m1-answer-now").is_visible()
    set_limits(page, max_tokens=4000, thinking_budget=0, temperature=0)
    send(page, "A long first question")
    page.locator("#m1-chat").get_by_text("Thinking…").first.wait_for()
    composer.locator(".stop-button").wait_for()
    composer.locator(".submit-button").wait_for(state="hidden")
    page.locator("#m1-stop").wait_for()
    box = composer.locator("textarea")
    box.fill("A queued follow-up")
    box.press("Enter")
    page.locator("#m1-queued").get_by_text("Queued: A queued follow-up").wait_for()
    assert box.input_value() == ""
    composer.locator(".stop-button").click()  # the first reply stops; the queued message goes out
    page.locator("#m1-chat").get_by_text("A queued follow-up").wait_for(timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#m1-queued .m1-queued')")
    # the follow-up's reply has begun (its panel may already read "Thought for": the random model can close it)
    page.locator("#m1-chat").get_by_text(re.compile(r"Thinking…|Thought for")).nth(1).wait_for()
    try:  # the follow-up's prompt holds the first reply, cut wherever Stop landed: the random model may end it at once
        composer.locator(".stop-button").click(timeout=3000)
    except PlaywrightTimeout:
        pass
    composer.locator(".submit-button").wait_for()
    chat = page.locator("#m1-chat")
    chat.get_by_text("Stopped.").first.wait_for()  # the first reply, stopped by the click that sent the queued one
    stats = chat.get_by_text(re.compile(r"TTFT .* · (\d[\d.]*k?) cached"))
    assert stats.count() == 2  # a stopped reply keeps its statistics, reuse included
    assert int(re.search(r"(\d+) cached", stats.nth(1).inner_text()).group(1)) > 0  # the follow-up reused state


def test_reply_that_ends_in_its_thinking_says_no_answer(fresh_page):
    page = fresh_page
    new_chat_with_reply(page, "Think only", max_tokens=16, thinking_budget=0)  # all 16 tokens are thinking
    page.locator("#m1-chat").get_by_text("No answer: the reply ended after its thinking").wait_for()


def test_trash_deletes_the_open_chat_after_confirming(fresh_page):
    page = fresh_page
    new_chat_with_reply(page, "Trash me please")
    sessions = page.locator("#m1-sessions")
    sessions.get_by_text("Trash me please").wait_for()
    trash = page.get_by_role("button", name="Delete this chat")
    page.once("dialog", lambda dialog: dialog.dismiss())
    with page.expect_event("dialog") as asked:
        trash.click()
    assert asked.value.message.startswith("Delete this chat?")
    # declined: the chat is still in the store. Positive signal: another page of this login reopens it from there
    other = page.context.new_page()
    other.goto(page.url)
    other.locator("#m1-chat").get_by_text("Trash me please").wait_for()
    assert other.locator("#m1-sessions").get_by_text("Trash me please").count() == 1
    other.close()
    assert sessions.get_by_text("Trash me please").count() == 1  # and this page still lists it
    page.once("dialog", lambda dialog: dialog.accept())
    trash.click()
    page.wait_for_function("() => !document.querySelector('#m1-sessions').innerText.includes('Trash me please')")


def test_rename_with_enter_one_step_export_and_imported_title(fresh_page, tmp_path):
    page = fresh_page
    new_chat_with_reply(page, "Exportable chat")
    page.locator("#m1-this-chat").get_by_text("This chat").click()
    title = page.locator("#m1-title textarea, #m1-title input").first
    expect(title).to_be_visible()  # the panel has opened ...
    assert not page.locator("#m1-download").is_visible()  # ... with no empty download box in it
    title.fill("Quarterly numbers: Q3/Q2 review")
    title.press("Enter")
    page.locator("#m1-sessions").get_by_text("Quarterly numbers: Q3/Q2 review").wait_for()
    with page.expect_download() as download:
        page.locator("#m1-export-json").click()  # one click: the file downloads
    assert download.value.suggested_filename == "Quarterly-numbers-Q3-Q2-review.json"
    exported = tmp_path / "exported.json"
    download.value.save_as(exported)
    with page.expect_file_chooser() as chooser:
        page.locator("#m1-import").click()
    chooser.value.set_files(str(exported))
    page.locator("#m1-sessions").get_by_text("Quarterly numbers: Q3/Q2 review (imported)").wait_for()


def test_icons_are_svg_not_emoji(fresh_page, tmp_path):
    page = fresh_page
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nSome text.\n")
    page.locator("#m1-composer input[type=file]").set_input_files(str(doc))
    chip = page.locator("#m1-chips .m1-chip")
    chip.wait_for()
    assert chip.locator("svg").count() == 1
    assert page.locator("#m1-banners svg").count() >= 1
    text = page.evaluate("() => document.querySelector('.gradio-container').innerText")
    assert not EMOJI.findall(text), EMOJI.findall(text)
    page.locator("#m1-clear-docs").click()


def _accessible(page) -> None:
    assert page.get_by_role("textbox", name="Message").count() == 1  # the composer has a name, not just a hint
    toggles = page.locator("#m1-chat .thought-group button")
    assert toggles.count() >= 2
    for i in range(toggles.count()):
        assert re.match(r"Show or hide the (reasoning|statistics)", toggles.nth(i).get_attribute("aria-label"))
    violations = axe_serious(page)
    assert violations == [], "\n".join(violations)


def test_accessibility_desktop(fresh_page):
    new_chat_with_reply(fresh_page, "Accessible desktop")
    fresh_page.locator("#m1-sessions label.selected, #m1-sessions label:has(input:checked)").wait_for()
    _accessible(fresh_page)  # the selected chat's contrast is one of axe's serious checks


def test_phone_layout(phone):
    page = phone
    toggle = page.locator("#m1-sidebar .toggle-button")
    box = toggle.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]  # the whole toggle is on screen
    for banner in page.locator("#m1-banners .m1-banner").all():
        if banner.is_visible():
            assert banner.evaluate("b => b.scrollWidth <= b.clientWidth + 1 && getComputedStyle(b).textOverflow "
                                   "!== 'ellipsis'")
    new_chat_with_reply(page, "Phone chat one")
    controls = page.locator("#m1-controls").bounding_box()
    assert controls["height"] <= 48  # one line
    meter = page.locator("#m1-meter .m1-meter").bounding_box()
    assert meter["y"] + meter["height"] <= PHONE["height"]  # above the fold
    assert page.locator("#m1-chat").bounding_box()["height"] >= 400
    _accessible(page)
    toggle.click()
    page.locator("#m1-sidebar.open").wait_for()
    page.locator("#m1-sessions").get_by_text("Phone chat one").click()
    page.wait_for_function("() => !document.querySelector('#m1-sidebar.open')")  # closed after picking a chat
    page.locator("#m1-chat").get_by_text("Phone chat one").wait_for()
    new_chat(page)  # "+ New chat" from the sidebar, which closes by itself


def test_defaults_for_new_chats_are_stored_and_overrides_marked(browser, studio):
    user = studio.new_user()
    context, page = login(browser, studio.url, *user)
    open_settings(page)
    note = page.locator("#m1-overrides")
    note.get_by_text("This chat uses your defaults").wait_for()
    system = page.locator("#m1-settings textarea").first
    system.fill("You are terse.")  # edited by hand: the preset radio follows
    page.locator("#m1-settings").get_by_label("Custom").wait_for()
    page.wait_for_function("() => document.querySelector('#m1-settings input[value=Custom]').checked")
    note.get_by_text("differs from your defaults").wait_for()
    assert "System prompt" in note.inner_text()
    box = page.locator("#m1-max-tokens input[type=number]")
    box.fill("96")
    box.press("Enter")
    page.locator("#m1-save-defaults").click()
    note.get_by_text("This chat uses your defaults").wait_for()
    context.close()
    context, page = login(browser, studio.url, *user)  # another visit: its empty chat starts from the stored defaults
    open_settings(page)
    page.wait_for_function("() => document.querySelector('#m1-max-tokens input[type=number]').value === '96'")
    assert page.locator("#m1-settings textarea").first.input_value() == "You are terse."
    note = page.locator("#m1-overrides")
    note.get_by_text("This chat uses your defaults").wait_for()
    page.locator("#m1-settings").get_by_label("General").check()  # a per-chat override, marked as such
    note.get_by_text("differs from your defaults").wait_for()
    page.locator("#m1-new").click()  # "+ New chat" starts from the stored defaults, not from this chat's override
    note.get_by_text("This chat uses your defaults").wait_for()
    assert page.locator("#m1-settings textarea").first.input_value() == "You are terse."
    page.locator("#m1-settings").get_by_label("General").check()
    note.get_by_text("differs from your defaults").wait_for()
    page.locator("#m1-use-defaults").click()
    note.get_by_text("This chat uses your defaults").wait_for()
    context.close()


def test_chat_menu_on_the_open_chat_in_the_list(fresh_page):
    page = fresh_page
    new_chat_with_reply(page, "Menu chat")
    menu = page.get_by_role("button", name=re.compile("Chat menu"))
    menu.wait_for()
    selected = page.locator("#m1-sessions label.selected").bounding_box()
    box = menu.bounding_box()
    assert selected["y"] <= box["y"] and box["y"] + box["height"] <= selected["y"] + selected["height"] + 1
    menu.click()
    title = page.locator("#m1-title textarea, #m1-title input").first
    title.wait_for()
    assert title.input_value() == "Menu chat"
    for name in ("#m1-rename", "#m1-export-md", "#m1-export-json", "#m1-delete", "#m1-share-create"):
        expect(page.locator(name)).to_be_visible()
