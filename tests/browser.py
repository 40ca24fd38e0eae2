"""Headless Chromium driven by selenium, for the `browser` tests: Debian's chromium and chromedriver
(scripts/install_browser.sh installs them; `make test` runs it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

import pytest

# Chromium reaches for Google's hosts at start and in the background; on a closed network those
# connections fail, many at a time. These flags keep it to the page under test.
QUIET_FLAGS = ("--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000")


def _find(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


@contextmanager
def chromium() -> Iterator["object"]:
    """A selenium WebDriver over a fresh headless Chromium profile. Without Chromium the test is skipped,
    unless $RAY_DISTILL_REQUIRE_BROWSER is set (CI sets it), where a missing browser fails."""
    browser, driver_path = _find(("chromium", "chromium-browser")), _find(("chromedriver",))
    if not (browser and driver_path):
        message = "headless Chromium and chromedriver are not installed (scripts/install_browser.sh)"
        if os.environ.get("RAY_DISTILL_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*QUIET_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        if os.geteuid() == 0:  # Chromium refuses to run as root inside its own sandbox
            options.add_argument("--no-sandbox")
        # An explicit driver: selenium's manager would otherwise try to download one.
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()
