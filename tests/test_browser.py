"""End-to-end studio tests in a real browser: Playwright driving Debian's Chromium against `python app.py` (tiny model).

    .venv/bin/python -m pytest -q tests/test_browser.py          # needs /usr/bin/chromium (`make browser`)

One server per module with a pool of logins (tests/browser_users.py): every test logs in as a user of its own and
makes the chats it needs, so each passes alone and in any order. Every wait is bounded and on a positive signal; an
absence is asserted only after the page shows it has updated. The README screenshots: tests/test_screenshots.py.
"""
import json
import re

from tests.browser_fixtures import (UI_TIMEOUT_MS, browser, expect, http_get as _get, make_pdf, meter_total,  # noqa: F401
                                    poll_until, running_requests, send, set_limits, start_server as _start_server,
                                    stop_server as _stop_server, wait_finished)
from tests.browser_users import login, studio, user_page, wait_idle  # noqa: F401


def reply_to(page, text: str, max_tokens: int = 16, thinking_budget: int = 4) -> None:
    """Send `text` in the open chat with small limits and wait until its reply is saved."""
    set_limits(page, max_tokens=max_tokens, thinking_budget=thinking_budget)
    send(page, text)
    wait_finished(page)


def attach(page, path) -> None:
    page.locator("#m1-composer input[type=file]").set_input_files(str(path))
    page.locator("#m1-chips .m1-chip").first.wait_for()


def test_chat_streams_reasoning_then_answer(user_page):
    page = user_page
    set_limits(page, max_tokens=160, thinking_budget=48)
    send(page, "Hello M1, what is 2+2?")
    chat = page.locator("#m1-chat")
    chat.get_by_text("Hello M1, what is 2+2?").wait_for()
    chat.get_by_text(re.compile(r"Thinking…|Thought for")).first.wait_for()
    wait_finished(page)
    assert chat.get_by_text(re.compile(r"Thought for [\d.]+ s · \d+ tokens")).count() >= 1
    assert re.search(r"TTFT [\d.]+ s · [\d.]+ tok/s", chat.inner_text())
    assert page.locator("#m1-sessions").get_by_text("Hello M1, what is 2+2?").is_visible()


def test_pdf_attachment_shows_tokens_and_moves_the_meter(user_page, tmp_path):
    page = user_page
    set_limits(page, max_tokens=48, thinking_budget=16)
    before = meter_total(page)
    attach(page, make_pdf(tmp_path / "report.pdf"))
    chip = page.locator("#m1-chips .m1-chip")
    expect(chip).to_have_count(1)
    assert "report.pdf" in chip.inner_text() and re.search(r"[\d.]+k? tokens", chip.inner_text())
    tokens = int(re.search(r"([\d.]+)(k?) tokens", chip.inner_text()).group(1).replace(".", "") or 0)
    assert tokens > 0 and meter_total(page) > before
    send(page, "Summarise the report")
    wait_finished(page)
    # the composer reports one upload in more than one change event: it went out attached once, none left pending
    expect(page.locator("#m1-chat").get_by_text("report.pdf")).to_have_count(1)
    expect(page.locator("#m1-chips .m1-chip")).to_have_count(0)


def test_answer_now_then_stop_really_stops_the_engine(user_page, studio):
    page = user_page
    set_limits(page, max_tokens=8000, thinking_budget=0, temperature=0)  # greedy: cannot end early by chance
    send(page, "Write a very long essay")
    page.locator("#m1-chat").get_by_text("Thinking…").first.wait_for()
    poll_until(lambda: running_requests(studio.url) == 1, "the engine runs the reply")
    page.locator("#m1-answer-now").click()  # closes the think block: the panel collapses, the answer streams
    page.locator("#m1-chat").get_by_text(re.compile(r"Thought for [\d.]+ s")).last.wait_for()
    page.locator("#m1-stop").click()
    page.locator("#m1-chat").get_by_text("stopped").last.wait_for(timeout=15_000)
    assert running_requests(studio.url) == 0


def test_regenerate_and_edit_make_versions_to_navigate(user_page):
    page = user_page
    reply_to(page, "Version me", max_tokens=48, thinking_budget=16)
    chat = page.locator("#m1-chat")
    page.locator("#m1-regenerate").click()
    chat.get_by_text("2/2").wait_for(timeout=60_000)  # "‹ 2/2 ›" under the reply
    wait_finished(page)
    chat.get_by_role("link", name="Previous version").click()
    chat.get_by_text("1/2").wait_for()
    page.locator("#m1-chat .user-row").first.hover()
    page.locator("#m1-chat button[aria-label=Edit]").first.click()
    page.locator("#m1-chat textarea").first.fill("Version me, edited")
    page.evaluate("window.__m1_turns = 0")
    page.locator("#m1-chat button[aria-label=Submit]").first.click()
    chat.get_by_text("Version me, edited").wait_for(timeout=60_000)
    wait_finished(page)
    chat.get_by_text("2/2").wait_for()  # now under the user message (the new reply has one version: no links)
    assert chat.get_by_role("link", name="Previous version").count() == 1
    chat.get_by_role("link", name="Previous version").click()
    chat.get_by_text("Version me", exact=True).wait_for()


def test_over_the_window_is_refused_before_sending(user_page):
    page = user_page
    set_limits(page, max_tokens=80_000, thinking_budget=0)  # more than the tiny model's 65,536-token window
    page.wait_for_selector("#m1-meter .m1-meter.over")
    assert "Over the context window by" in page.inner_text("#m1-meter")
    turns = page.locator("#m1-chat .message-row").count()
    send(page, "This must not be sent")
    page.locator("#m1-error").get_by_text("Not sent").wait_for()
    assert page.locator("#m1-chat .message-row").count() == turns
    set_limits(page, max_tokens=64, thinking_budget=16)
    page.wait_for_selector("#m1-meter .m1-meter.ok")


def test_reload_finds_the_sessions_in_the_sidebar(user_page):
    page = user_page
    reply_to(page, "Reload: the first chat")
    reply_to(page, "Reload: its follow-up")
    page.locator("#m1-new").click()
    page.wait_for_function("() => !document.querySelector('#m1-chat .message-row')")
    reply_to(page, "Reload: the second chat")
    page.reload()
    page.wait_for_selector("#m1-composer textarea")
    sessions = page.locator("#m1-sessions")
    sessions.get_by_text("Reload: the first chat").wait_for()
    assert sessions.get_by_text("Reload: the second chat").is_visible()
    page.locator("#m1-chat").get_by_text("Reload: the second chat").wait_for()  # reopened where it was
    sessions.get_by_text("Reload: the first chat").click()
    page.locator("#m1-chat").get_by_text("Reload: its follow-up").wait_for()


def test_export_json_then_import_makes_a_copy(user_page, tmp_path):
    page = user_page
    reply_to(page, "Export me as JSON")
    page.locator("#m1-this-chat").get_by_text("This chat").click()
    title_box = page.locator("#m1-title textarea, #m1-title input").first
    expect(title_box).to_have_value("Export me as JSON")
    title = title_box.input_value()
    with page.expect_download() as download:
        page.locator("#m1-export-json").click()  # one step: the file downloads
    exported = tmp_path / "exported.json"
    download.value.save_as(exported)
    assert json.loads(exported.read_text())["session"]["title"] == title
    copies = page.locator("#m1-sessions").get_by_text(title + " (imported)", exact=True)
    before = copies.count()
    with page.expect_file_chooser() as chooser:
        page.locator("#m1-import").click()
    chooser.value.set_files(str(exported))
    page.wait_for_function("([title, n]) => [...document.querySelectorAll('#m1-sessions label')]"
                           ".filter(l => l.innerText.trim() === title).length > n", arg=[title + " (imported)", before])


def test_share_link_opens_logged_out_and_can_be_revoked(user_page, browser, studio, tmp_path):
    page = user_page
    attach(page, make_pdf(tmp_path / "report.pdf"))
    reply_to(page, "Hello M1, what is 2+2?")
    page.locator("#m1-share").get_by_text("Share (read-only link)").click()
    page.locator("#m1-share-create").click()
    link = page.locator("#m1-share-url textarea, #m1-share-url input").first
    page.wait_for_function("el => el.value.includes('/share/')", arg=link.element_handle())
    url = link.input_value()
    assert url.startswith(studio.url + "/share/")
    visitor = browser.new_context()  # logged out
    shared = visitor.new_page()
    shared.goto(url)
    assert "Hello M1, what is 2+2?" in shared.inner_text("main")
    assert "report.pdf" in shared.inner_text("main") and "line 3" not in shared.inner_text("main")
    page.locator("#m1-share-revoke").click()
    page.wait_for_function("el => el.value === ''", arg=link.element_handle())
    assert _get(url)[0] == 404
    visitor.close()


def test_delete_asks_twice(user_page):
    page = user_page
    reply_to(page, "Delete me soon")
    page.locator("#m1-this-chat").get_by_text("This chat").click()
    page.locator("#m1-delete").click()
    page.locator("#m1-delete", has_text="Click again to delete").wait_for()
    assert page.locator("#m1-sessions").get_by_text("Delete me soon").count() == 1
    page.locator("#m1-delete").click()
    page.wait_for_function("() => !document.querySelector('#m1-sessions').innerText.includes('Delete me soon')")


def test_two_users_see_only_their_own_sessions(browser, studio):
    (user_a, password_a), (user_b, password_b) = studio.new_user(), studio.new_user()
    context_a, page_a = login(browser, studio.url, user_a, password_a, form=True)
    context_b = None
    try:
        reply_to(page_a, "alpha secret plan", max_tokens=32, thinking_budget=8)
        assert f"Signed in as {user_a}" in page_a.inner_text("#m1-header")
        # login() waited for "Signed in as": the load event that fills the list has run
        context_b, page_b = login(browser, studio.url, user_b, password_b, form=True)
        assert page_b.locator("#m1-sessions").get_by_text("alpha secret plan").count() == 0
        assert page_b.locator("#m1-chat").get_by_text("alpha secret plan").count() == 0
        reply_to(page_b, "bravo private note\nalso about alpha", max_tokens=32, thinking_budget=8)
        page_a.reload()
        page_a.locator("#m1-sessions").get_by_text("alpha secret plan").wait_for()
        assert page_a.locator("#m1-sessions").get_by_text("bravo private note").count() == 0
        page_b.locator("#m1-search input, #m1-search textarea").first.fill("alpha")
        # positive signal first: the search for "alpha" rendered its hits (b's own chat, found by its content, shows
        # a snippet only search results have); a's chat, whose title has "alpha", is not among them
        page_b.locator("#m1-sessions").get_by_text(re.compile(r"^bravo private note — .*alpha")).wait_for()
        assert page_b.locator("#m1-sessions").get_by_text("alpha secret plan").count() == 0
    finally:
        context_a.close()
        if context_b:
            context_b.close()
        wait_idle(studio.url)


def test_root_path_behind_a_prefix_stripping_proxy(browser, tmp_path_factory):
    """--root-path /studio: the page is reached at /studio/ through a proxy that strips the prefix (played here by
    Playwright's request routing); every request stays under the prefix and a reply streams to the end."""
    proc, url = _start_server(tmp_path_factory.mktemp("rooted"), "--root-path", "/studio")
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        outside = []
        page.on("request", lambda r: outside.append(r.url) if r.url.startswith(url) and
                not r.url.startswith(url + "/studio") else None)
        page.route(re.compile(r".*/studio(/.*)?$"), lambda route: _strip_prefix(route, "/studio"))
        page.goto(url + "/studio/")
        page.wait_for_selector("#m1-composer textarea")
        set_limits(page, max_tokens=24, thinking_budget=8)
        send(page, "Behind a proxy")
        wait_finished(page)
        assert outside == []
        page.unroute_all(behavior="ignoreErrors")
    finally:
        context.close()
        _stop_server(proc)


def _strip_prefix(route, prefix: str) -> None:
    """The proxy: forward the request without `prefix`. Gradio's heartbeat is an event stream that never ends, and
    route.fetch waits for a whole body (30 s, then the test failed whenever it ran longer): it gets an empty one."""
    if "/gradio_api/heartbeat/" in route.request.url:
        route.fulfill(status=200, content_type="text/event-stream", body="")
        return
    route.fulfill(response=route.fetch(url=route.request.url.replace(prefix, "", 1)))
