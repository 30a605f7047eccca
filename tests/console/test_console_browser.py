"""The console in a real browser (Debian's chromium, driven by Playwright): sign in, open a
user whose statement is longer than a page, click "more", and see htmx append the next
lines, under the pages' Content-Security-Policy. Without /usr/bin/chromium this fails: CI
installs it (.ci/run)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

if TYPE_CHECKING:
    from console_fixtures import Console

pytest_plugins = ["console_fixtures"]

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 10_000


@pytest.fixture
def browser(console: Console) -> Iterator[Browser]:
    """Chromium, started after the server: Playwright's sync API runs an event loop on this
    thread while it is open, and setting up a PostgreSQL database needs one of its own."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            launched.close()


def test_sign_in_open_a_user_and_load_more_lines(console: Console, browser: Browser) -> None:
    page: Page = browser.new_page()
    refused: list[str] = []  # what the Content-Security-Policy blocked, as chromium says
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    try:
        page.goto(f"{console.url}/console/users/{console.story.paged_user_id}")
        assert page.url.endswith("/console/login")  # sent to sign in first
        page.fill("input[name=key]", console.keys["read"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{console.url}/console/")
        page.goto(f"{console.url}/console/users/{console.story.paged_user_id}")
        lines = page.locator("table#statement-USD tr.line")
        assert lines.count() == 50
        page.click("tr.more button")
        expect(lines).to_have_count(60, timeout=WAIT_MS)
        assert lines.nth(59).locator("td").nth(4).inner_text() == "60.00"
        assert lines.nth(50).locator("td").nth(4).inner_text() == "51.00"
        assert page.locator("tr.more").count() == 0  # the last page has no button
        assert page.evaluate("typeof htmx") == "object"  # loaded from /console/static
        page.click("text=Sign out")
        page.wait_for_url(f"{console.url}/console/login")
    finally:
        page.close()
    assert refused == []
