"""Recreate web-page.png: the web page at / with a few examples classified, in headless Chromium.

    .venv/bin/python docs/images/make_web_page_png.py

Serves the bundled model repository on free ports in this process and drives Debian's chromium through
chromium-driver with Selenium (the dev extra), as tests/http/test_web_page.py does.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cifar10_serving.settings import Settings
from cifar10_serving.testing import BackgroundServer

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("web-page.png")
EXAMPLES = ["cat.jpg", "ship-256.png", "horse.jpg", "truck.jpg", "airplane.jpg", "frog.jpg"]
WIDTH = 1100


def main() -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     f"--window-size={WIDTH},900", "--force-device-scale-factor=1",
                     "--blink-settings=preferredColorScheme=1"):  # the light scheme
        options.add_argument(argument)
    settings = Settings(model_repository=str(ROOT / "models"), host="127.0.0.1",
                        port=0, http_port=0, metrics_port=-1, reload_interval_s=0.0)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        with BackgroundServer(settings) as server:
            driver.get(server.http_address + "/")
            wait = WebDriverWait(driver, 30)
            wait.until(lambda d: "accurate" in d.find_element(By.ID, "model").text)
            driver.find_element(By.ID, "files").send_keys(
                "\n".join(str(ROOT / "examples" / name) for name in EXAMPLES))
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '.result[data-state="done"]'))
                       == len(EXAMPLES))
            height = driver.execute_script("return document.documentElement.scrollHeight")
            # the whole page in one picture: a viewport as tall as the page (a window that
            # tall is capped at the screen's height)
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})
            png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    Image.open(io.BytesIO(png)).convert("RGB").save(OUT, optimize=True)
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
