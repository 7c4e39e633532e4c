"""The README screenshots (assets/screenshots/, desktop 1400x900 and phone 390x844), taken in a real browser:

    M1_SCREENSHOTS=1 .venv/bin/python -m pytest -q tests/test_screenshots.py

Skipped unless M1_SCREENSHOTS is set. Its own server without logins (the header stays plain), used by nothing else.
"""
import os

import pytest

from tests.browser_fixtures import (ROOT, UI_TIMEOUT_MS, browser, make_pdf, open_page, send, server,  # noqa: F401
                                    set_limits, wait_finished)


def _stop_if_streaming(page) -> None:
    """The composer's Stop (shown instead of Send while a reply streams), if the reply is still running."""
    stop = page.locator("#m1-composer .stop-button")
    if stop.is_visible():
        stop.click()
        page.locator("#m1-composer .submit-button").wait_for()


@pytest.mark.skipif(not os.environ.get("M1_SCREENSHOTS"), reason="set M1_SCREENSHOTS=1 to refresh assets/screenshots")
def test_screenshots(browser, server, tmp_path):
    """A conversation with a document, a collapsed reasoning panel and one still thinking (open), desktop + phone.
    Its own server without logins (the header stays plain), used by no other test."""
    out = ROOT / "assets" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    context, page = open_page(browser, server)
    set_limits(page, max_tokens=64, thinking_budget=40)
    page.locator("#m1-composer input[type=file]").set_input_files(str(make_pdf(tmp_path / "quarterly-report.pdf", 6)))
    page.locator("#m1-chips .m1-chip").first.wait_for()
    send(page, "Summarise the attached report in three bullet points.")
    wait_finished(page)
    set_limits(page, max_tokens=4000, thinking_budget=0)
    send(page, "Now compare Q3 with Q2 and show the math: $\\Delta = \\frac{q_3 - q_2}{q_2}$")
    page.locator("#m1-chat").get_by_text("Thinking…").first.wait_for()
    appendix = tmp_path / "appendix.md"
    appendix.write_text("# Appendix\n\n| quarter | revenue |\n|---|---|\n| Q2 | 1.20 |\n| Q3 | 1.38 |\n" * 40)
    page.locator("#m1-composer input[type=file]").set_input_files(str(appendix))  # waits for the next message
    page.locator("#m1-chips .m1-chip").first.wait_for()
    _thinking_on_screen(page)
    page.screenshot(path=str(out / "desktop.png"))
    _stop_if_streaming(page)
    phone_context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone = phone_context.new_page()
    phone.set_default_timeout(UI_TIMEOUT_MS)
    phone.goto(server)  # the newest session opens; its settings (4000 tokens, no thinking budget) come with it
    phone.locator("#m1-chat").get_by_text("quarterly-report.pdf").first.wait_for()
    send(phone, "And the margin?")
    phone.locator("#m1-chat").get_by_text("Thinking…").first.wait_for()
    _thinking_on_screen(phone)
    phone.screenshot(path=str(out / "phone.png"))
    _stop_if_streaming(phone)
    phone_context.close()
    context.close()


def _thinking_on_screen(page) -> None:
    """Until the last reasoning panel shows some lines of thinking text."""
    page.wait_for_function("() => [...document.querySelectorAll('#m1-chat .thought-group')].pop()"
                           "?.innerText.split('\\n').length > 3")
