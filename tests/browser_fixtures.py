"""Shared pieces of the browser tests: start `python app.py` (tiny model) on loopback, Debian's Chromium through
Playwright, page helpers (send, wait_finished, set_limits) and the axe-core accessibility check.

    from tests.browser_fixtures import browser, set_limits, send, wait_finished, ...   # noqa: F401 (fixtures)

Pages come from tests/browser_users.py: a server per module with a pool of logins, a user of its own per test.
Waits are on positive signals (Playwright's auto-waiting `expect` and `wait_for`), never fixed sleeps: an absence is
asserted only after something shows that the page has updated.

A missing Chromium or Playwright skips the browser tests on a developer machine only when asked
(M1_SKIP_BROWSER=1) or when not on CI; on CI (CI=true) it is a failure, so browser tests cannot vanish silently.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio.chat_settings import ChatSettings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("M1_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 150
UI_TIMEOUT_MS = 45_000  # generous: CI machines and shared dev boxes are slow at times
DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
DEFAULT_TEMPERATURE = ChatSettings().temperature


def browser_missing_reason() -> str | None:
    """Why the browser tests cannot run here (None when Chromium and Playwright are both present)."""
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (run `make browser`, i.e. `apt-get install -y chromium`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is missing (pip install -r requirements.txt)"
    return None


def require_browser() -> None:
    """At import of a browser test module: skip when the developer asked (M1_SKIP_BROWSER=1) or, off CI, when no
    browser is installed; on CI (CI=true) a missing browser fails the run instead."""
    if os.environ.get("M1_SKIP_BROWSER") == "1":
        pytest.skip("browser tests skipped: M1_SKIP_BROWSER=1", allow_module_level=True)
    reason = browser_missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"!!! BROWSER TESTS SKIPPED: {reason} !!!", allow_module_level=True)


require_browser()
from playwright import sync_api  # noqa: E402 - only importable once require_browser() passed
from playwright.sync_api import expect  # noqa: E402

expect.set_options(timeout=UI_TIMEOUT_MS)  # its own default is 5 s; the pages' is UI_TIMEOUT_MS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_server(data_dir: Path, *flags: str, port: int | None = None):
    """`python app.py --data-dir data_dir *flags` on a free port; returns (process, base URL) once /health answers."""
    port = port or free_port()
    log = open(data_dir / "server.log", "a")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", str(data_dir), *flags],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}: {(data_dir / 'server.log').read_text()[-3000:]}")
        try:
            if http_get(url + "/health")[0] == 200:
                return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app.py did not answer /health in {START_TIMEOUT_S} s")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A studio without logins (every page is the user "local"): only for the README screenshots."""
    proc, url = start_server(tmp_path_factory.mktemp("studio"))
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str, viewport: dict = DESKTOP, **context_args):
    """A fresh browser context (its own storage: no chat reopened from another test) with the studio loaded."""
    context = browser.new_context(viewport=viewport, **context_args)
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#m1-composer textarea")
    return context, page


def _phone_sidebar(page, want_open: bool) -> None:
    """On a phone-sized page the sidebar covers the chat: open or close it."""
    if page.viewport_size["width"] >= 700 or bool(page.locator("#m1-sidebar.open").count()) == want_open:
        return
    page.locator("#m1-sidebar .toggle-button").click()
    page.locator("#m1-sidebar.open").wait_for(state="attached" if want_open else "detached")


def open_settings(page) -> None:
    _phone_sidebar(page, True)
    settings = page.locator("#m1-settings")
    if not settings.locator("#m1-max-tokens").is_visible():
        settings.get_by_text("Settings").first.click()
        settings.locator("#m1-max-tokens").wait_for()


def close_settings(page) -> None:
    settings = page.locator("#m1-settings")
    if settings.locator("#m1-max-tokens").is_visible():
        settings.get_by_text("Settings").first.click()
    _phone_sidebar(page, False)


def set_limits(page, max_tokens: int, thinking_budget: int, temperature: float | None = None) -> None:
    """Open Settings and set max output tokens and the thinking budget (small: the tiny model is slow on CPU), and
    the temperature if given (0: greedy, so the random-weights model's reply cannot end early by chance)."""
    open_settings(page)
    values = [("#m1-max-tokens", max_tokens), ("#m1-thinking-budget", thinking_budget)]
    for elem_id, value in values + ([("#m1-temperature", temperature)] if temperature is not None else []):
        box = page.locator(f"{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
        box.blur()
    # the server has the new values: the meter reserves exactly max_tokens, and the overrides note (computed from
    # every panel value) names the temperature when it is not the default one
    expect(page.locator("#m1-meter span.seg-reserved_output")).to_have_attribute(
        "title", f"Reserved output: {max_tokens:,} tokens")
    if temperature is not None and temperature != DEFAULT_TEMPERATURE:
        expect(page.locator("#m1-overrides")).to_contain_text("Temperature")
    close_settings(page)


def send(page, text: str) -> None:
    """Type a message and press Enter (marks where the new turn starts for wait_finished)."""
    page.evaluate("window.__m1_turns = document.querySelectorAll('#m1-chat .message-row').length")
    box = page.locator("#m1-composer textarea")
    box.fill(text)
    box.press("Enter")


def stop_if_streaming(page) -> None:
    """Press the composer's Stop if a reply still streams (a failed test must not leave the engine busy)."""
    page.evaluate("() => { const stop = document.querySelector('#m1-composer .stop-button');"
                  " if (stop && stop.offsetParent !== null) stop.click(); }")  # no waiting: cleanup only


def wait_finished(page, timeout_ms: int = 150_000) -> None:
    """Until the reply of the last sent message has its stats panel (the turn was saved)."""
    page.wait_for_function("""() => {
        const rows = [...document.querySelectorAll('#m1-chat .message-row')].slice(window.__m1_turns || 0);
        return rows.some(row => row.innerText.includes('TTFT'));
    }""", timeout=timeout_ms)


def meter_total(page) -> int:
    return int(page.locator("#m1-meter .m1-meter").get_attribute("data-total"))


def running_requests(url: str) -> int:
    return json.loads(http_get(url + "/health")[1])["running_requests"]


def poll_until(check, what: str, timeout_s: float = 30) -> None:
    """Until check() is true (a condition outside the page, e.g. the engine's /health), else fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.1)


def axe_serious(page) -> list[str]:
    """axe-core's serious and critical violations on the page as "rule: target" lines (empty = none)."""
    from axe_playwright_python.sync_playwright import Axe
    result = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {node['target']} {node.get('failureSummary', '')[:160]}"
            for v in result.response["violations"] if v["impact"] in ("serious", "critical") for node in v["nodes"]]


def make_pdf(path: Path, pages: int = 3) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas
    pdf = canvas.Canvas(str(path), pagesize=A4)
    for number in range(1, pages + 1):
        for line in range(40):
            pdf.drawString(60, 800 - 18 * line, f"Page {number}, line {line}: the quarterly report of M1 Studio.")
        pdf.showPage()
    pdf.save()
    return path
