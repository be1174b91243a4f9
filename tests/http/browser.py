"""A real headless Chromium for the tests, driven with Selenium through Debian's chromium and
chromium-driver (CI installs both: .ci/run); tests skip with the reason when they are missing."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 20.0


@contextmanager
def chromium(width: int = 1200, height: int = 900) -> Iterator:
    """A headless Chromium (a Selenium WebDriver), quit afterwards."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = WAIT_S):
    """``condition(driver)`` once it is truthy (TimeoutException past ``timeout``)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def foreign_resources(driver, origin: str) -> list[str]:
    """Every URL the page loaded (itself and each resource) that is not on ``origin``."""
    urls = [driver.current_url, *driver.execute_script(
        "return performance.getEntriesByType('resource').map(entry => entry.name)")]
    return [url for url in urls if _origin(url) != _origin(origin)]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url.removeprefix("blob:"))  # an object URL names the origin that made it
    return parts.scheme, parts.netloc
