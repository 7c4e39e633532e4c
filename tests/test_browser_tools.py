"""The tool-call blocks in a real browser: a conversation with tool calls (imported from an export file) shows each
call and each result as a collapsible block that opens on click. The server runs with `--tools` on."""
import json
import time

import pytest

from tests.browser_fixtures import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, sync_api
from tests.browser_fixtures import start_server as _start_server, stop_server as _stop_server

TITLE = "Tool use import"
CALL = '<tool_calls>\n{"name": "calculator", "arguments": {"expression": "6 * 7"}}\n</tool_calls>'


def export_file(path):
    now = time.time()
    message = {"reasoning": "", "stats": {}, "status": "done", "selected": True, "created_at": now}
    messages = [
        {**message, "id": 1, "parent_id": None, "role": "user", "content": "What is 6 * 7?"},
        {**message, "id": 2, "parent_id": 1, "role": "assistant", "content": "Let me compute.\n" + CALL,
         "reasoning": "Use the calculator."},
        {**message, "id": 3, "parent_id": 2, "role": "tool",
         "content": json.dumps([{"name": "calculator", "arguments": '{"expression": "6 * 7"}', "result": "42"}])},
        {**message, "id": 4, "parent_id": 3, "role": "assistant", "content": "The answer is 42."}]
    data = {"format": "m1-studio-session", "version": 1, "session": {
        "title": TITLE, "system_prompt": "", "settings": {}, "replay_thinking": False, "created_at": now,
        "updated_at": now}, "messages": messages, "attachments": []}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    proc, url = _start_server(tmp_path_factory.mktemp("studio_tools"), "--tools", "calculator,documents")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        page.goto(url)
        page.wait_for_selector("#m1-composer textarea")
        yield page
        browser.close()
    _stop_server(proc)


def test_tool_calls_and_results_are_collapsible_blocks(page, tmp_path):
    page.locator("#m1-this-chat").get_by_text("This chat").click()  # the import button lives in this panel
    with page.expect_file_chooser() as chooser:
        page.locator("#m1-import").click()
    chooser.value.set_files(str(export_file(tmp_path / "tools.json")))
    page.locator("#m1-sessions").get_by_text(f"{TITLE} (imported)", exact=True).first.click()  # imports are titled so
    chat = page.locator("#m1-chat")
    chat.get_by_text("The answer is 42.").wait_for()
    call_title, result_title = chat.get_by_text("🔧 Called calculator"), chat.get_by_text("📋 Result of calculator")
    call_title.wait_for()
    assert result_title.is_visible() and chat.get_by_text("Let me compute.").is_visible()
    assert "<tool_calls>" not in chat.inner_text()  # the raw block is not shown as text
    assert not chat.locator(".m1-tool-call").first.is_visible()  # closed like the reasoning panel
    call_title.click()
    chat.locator(".m1-tool-call").first.wait_for(state="visible")
    assert '"expression": "6 * 7"' in chat.locator(".m1-tool-call").first.inner_text()
    result_title.click()
    result = chat.locator(".m1-tool-result").first
    result.wait_for(state="visible")
    assert result.inner_text().strip() == "42"
