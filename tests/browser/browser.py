"""Shared by the dashboard tests: Debian's Chromium through Playwright, and a way
to call the blocking `cloud` helpers from inside a sync Playwright block."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api  # installed by deploy/bootstrap.sh (the [dev] extra)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a blocking helper of the `cloud` fixture from a plain thread.

    Inside a sync_playwright() block the current thread has Playwright's event
    loop marked as running, so a helper that uses asyncio.run() would fail there.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn(*args)
        except BaseException as exc:
            result["error"] = exc

    t = threading.Thread(target=run, name=f"cloud-{getattr(fn, '__name__', 'call')}")
    t.start()
    t.join(timeout=120)
    if t.is_alive():
        raise TimeoutError(f"{fn!r} did not return within 120 s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


@contextmanager
def chromium() -> Iterator[sync_api.Browser]:
    """Debian's Chromium, headless; Playwright never downloads a browser."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not at /usr/bin/chromium: run deploy/bootstrap.sh")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class ConsoleWatch:
    """Collects console errors and page errors; `allow` names expected ones."""

    def __init__(self, page: sync_api.Page) -> None:
        self.errors: list[str] = []
        self.allow: tuple[str, ...] = ()
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not any(a in msg.text for a in self.allow):
            self.errors.append(f"console: {msg.text}")


def sign_in(page: sync_api.Page, base_url: str, email: str, password: str) -> None:
    page.goto(base_url + "/")
    page.fill("#login-email", email)
    page.fill("#login-password", password)
    page.click("#login-submit")
    page.wait_for_function(
        "() => document.querySelector('#ws-state').textContent.trim() === 'connected'"
    )


def marker_selector(vehicle_id: int) -> str:
    return f'.vehicle-marker[data-vehicle-id="{vehicle_id}"]'


def text(page: sync_api.Page, selector: str) -> str:
    """The element's text ("" when it has none), for assertions."""
    return page.text_content(selector) or ""


def attr(locator: sync_api.Locator, name: str) -> str:
    value = locator.get_attribute(name)
    assert value is not None, f"no {name} on {locator}"
    return value
