"""Browser tests that share nothing but the server: one `python app.py --auth ...` per module with a pool of logins,
and every test logs in as a user no other test has used (its own chats, its own defaults, its own browser context).

    from tests.browser_users import studio, user_page, fresh_page, phone, login   # noqa: F401 (fixtures)

So a test never opens, lists or searches a chat another test made, and the tests pass in any order. After each test
the engine must be idle again (a reply left streaming fails that test's teardown, not the next test).
"""
import itertools
import re
from dataclasses import dataclass, field

import pytest

from tests.browser_fixtures import (DESKTOP, PHONE, UI_TIMEOUT_MS, poll_until, running_requests, start_server,
                                    stop_if_streaming, stop_server)

POOL_SIZE = 40  # more than the tests of any one module
IDLE_TIMEOUT_S = 30


@dataclass
class Studio:
    """A running studio with a pool of logins (user NN, password pw-NN); `new_user()` hands out the next unused."""
    url: str
    users: list[str]
    _unused: itertools.count = field(default_factory=itertools.count)

    def new_user(self) -> tuple[str, str]:
        index = next(self._unused)
        if index >= len(self.users):
            raise RuntimeError(f"the login pool of {len(self.users)} users is used up: raise POOL_SIZE")
        return self.users[index], "pw-" + self.users[index]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    users = [f"user{i:02d}" for i in range(POOL_SIZE)]
    logins = [arg for name in users for arg in ("--auth", f"{name}:pw-{name}")]
    # every test logs in from 127.0.0.1: more than the default 10 logins a minute per client when the box is quick
    proc, url = start_server(tmp_path_factory.mktemp("studio_users"), *logins, "--rate-limit-login", "600/minute")
    yield Studio(url, users)
    stop_server(proc)


def login(browser, url: str, user: str, password: str, viewport: dict = DESKTOP, *, form: bool = False,
          **context_args):
    """A fresh browser context logged in as `user`, with the studio loaded (its header names the user). `form`: through
    the login page, as a person does; else the same POST /login from the context (its cookie, one page load less)."""
    context = browser.new_context(viewport=viewport, **context_args)
    context.set_default_timeout(UI_TIMEOUT_MS)  # every page of the context
    page = context.new_page()
    if form:
        page.goto(url)
        page.locator("input[type=text], input[name=username]").first.fill(user)
        page.locator("input[type=password]").first.fill(password)
        page.locator("button", has_text=re.compile("log ?in", re.I)).first.click()
    else:
        response = context.request.post(url + "/login", form={"username": user, "password": password})
        assert response.ok, f"POST /login as {user}: {response.status} {response.text()}"
        page.goto(url)
    page.wait_for_selector("#m1-composer textarea")
    page.locator("#m1-header").get_by_text(f"Signed in as {user}").wait_for()  # the page's load event has run
    return context, page


def wait_idle(url: str, timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Until the engine runs no request (a test must not leave work for the next one)."""
    poll_until(lambda: running_requests(url) == 0, "the engine idle after the test (a reply was left streaming)",
               timeout_s)


def _user_page(browser, studio, viewport: dict = DESKTOP, **context_args):
    context, page = login(browser, studio.url, *studio.new_user(), viewport, **context_args)
    yield page
    stop_if_streaming(page)
    context.close()
    wait_idle(studio.url)


@pytest.fixture
def user_page(browser, studio):
    """A desktop page logged in as a user of its own (no chats yet)."""
    yield from _user_page(browser, studio)


@pytest.fixture
def fresh_page(browser, studio):
    """A desktop page logged in as a user of its own (no chats yet); the name the UX tests use."""
    yield from _user_page(browser, studio)


@pytest.fixture
def phone(browser, studio):
    """A phone-sized page (390x844, touch) logged in as a user of its own."""
    yield from _user_page(browser, studio, PHONE, is_mobile=True, has_touch=True)
