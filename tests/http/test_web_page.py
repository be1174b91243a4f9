"""The web page at / in a real headless Chromium against a real server: images picked with
the file input, dropped and pasted are classified and shown with their bars, by the model
picked among those served; errors are words; nothing is fetched from outside the server; a
phone-sized window does not scroll sideways; the keyboard reaches every control."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from cifar10_serving.settings import Settings
from cifar10_serving.testing import BackgroundServer
from tests.http.browser import chromium, foreign_resources, wait

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BUNDLED = ROOT / "models" / "cifar10-cnn.onnx"
REPOSITORY = ROOT / "models"


@pytest.fixture(scope="module")
def server():
    settings = Settings(model_path=str(BUNDLED), host="127.0.0.1", port=0, http_port=0,
                        metrics_port=-1, reload_interval_s=0.0)
    with BackgroundServer(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


@pytest.fixture
def page(browser, server):
    """The page freshly loaded, the server shown ready."""
    browser.set_window_size(1200, 900)
    return open_page(browser, server.http_address)


def open_page(driver, address: str):
    from selenium.webdriver.common.by import By

    driver.get(address + "/")
    wait(driver, lambda d: d.find_element(By.ID, "health").get_attribute("data-state") != "unknown")
    return driver


def upload(driver, *paths: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))


def cards(driver, count: int) -> list[dict]:
    """The first ``count`` result cards once none is waiting: state, name, verdict, status, bars."""
    from selenium.webdriver.common.by import By

    def settled(d):
        found = d.find_elements(By.CSS_SELECTOR, "#results > .result")
        return found if len(found) >= count and all(
            c.get_attribute("data-state") != "waiting" for c in found) else False

    return [{
        "state": card.get_attribute("data-state"),
        "name": card.find_element(By.CSS_SELECTOR, ".name").text,
        "verdict": card.find_element(By.CSS_SELECTOR, ".verdict").text,
        "status": card.find_element(By.CSS_SELECTOR, ".status").text,
        "bars": [(bar.find_element(By.CSS_SELECTOR, ".label").text,
                  bar.find_element(By.CSS_SELECTOR, ".bar span").size["width"])
                 for bar in card.find_elements(By.CSS_SELECTOR, ".bars li")],
    } for card in wait(driver, settled)[:count]]


def test_the_page_shows_the_model_and_that_the_server_is_ready(page):
    from selenium.webdriver.common.by import By

    assert page.title == "CIFAR-10 classifier"
    wait(page, lambda d: "85.80 %" in d.find_element(By.ID, "model").text)
    model = page.find_element(By.ID, "model").text
    assert "cifar10-cnn" in model and "2,500 test images" in model
    version = page.execute_script("return fetch('v1/model').then(r => r.json()).then(m => m.version)")
    assert version in model
    assert page.find_element(By.ID, "health").get_attribute("data-state") == "ready"
    assert page.find_element(By.ID, "health").text == "Ready"


def test_an_uploaded_image_is_classified_with_bars(page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    upload(page, EXAMPLES / "cat.jpg")
    [cat] = cards(page, 1)
    assert cat["state"] == "done" and cat["name"] == "cat.jpg"
    assert cat["verdict"].lower().startswith("cat ") and cat["verdict"].endswith("%")
    labels = [label for label, _ in cat["bars"]]
    widths = [width for _, width in cat["bars"]]
    assert len(labels) == 3 and labels[0] == "cat"
    assert widths == sorted(widths, reverse=True) and widths[0] > 10 * widths[1] > 0

    Select(page.find_element(By.ID, "top-k")).select_by_visible_text("5")
    assert len(cards(page, 1)[0]["bars"]) == 5  # from the probabilities already answered


def test_several_images_at_once(page):
    names = ["dog", "ship", "truck", "frog"]
    upload(page, *(EXAMPLES / f"{name}.jpg" for name in names))
    found = cards(page, len(names))
    assert [c["name"] for c in found] == [f"{name}.jpg" for name in names]
    assert [c["verdict"].split()[0].lower() for c in found] == names


def test_a_file_that_is_not_an_image_is_an_error_in_words(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a picture\n")
    upload(page, notes, EXAMPLES / "cat.jpg")
    broken, cat = cards(page, 2)
    assert broken["state"] == "error" and broken["name"] == "notes.txt"
    assert broken["status"].startswith("Not an image the server can read: cannot decode image")
    assert broken["bars"] == [] and broken["verdict"] == ""
    assert cat["state"] == "done"  # the next image is not held up by it


def test_dropped_and_pasted_images_are_classified(page):
    """The drop and paste handlers, given files as the browser hands them over."""
    cat = base64.b64encode((EXAMPLES / "cat.jpg").read_bytes()).decode()
    horse = base64.b64encode((EXAMPLES / "horse.jpg").read_bytes()).decode()
    page.execute_script("""
        const file = (b64, name) => new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))],
                                             name, {type: "image/jpeg"});
        const dropped = new DataTransfer();
        dropped.items.add(file(arguments[0], "dropped-cat.jpg"));
        document.body.dispatchEvent(new DragEvent("drop", {dataTransfer: dropped, bubbles: true, cancelable: true}));
        const pasted = new DataTransfer();
        pasted.items.add(file(arguments[1], "pasted-horse.jpg"));
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: pasted, bubbles: true, cancelable: true}));
    """, cat, horse)
    dropped, pasted = cards(page, 2)
    assert (dropped["name"], dropped["verdict"].split()[0].lower()) == ("dropped-cat.jpg", "cat")
    assert (pasted["name"], pasted["verdict"].split()[0].lower()) == ("pasted-horse.jpg", "horse")


def test_no_request_leaves_the_server(page, server):
    from selenium.webdriver.common.by import By

    upload(page, EXAMPLES / "airplane.jpg")
    cards(page, 1)
    wait(page, lambda d: "cifar10-cnn" in d.find_element(By.ID, "model").text)
    assert foreign_resources(page, server.http_address) == []
    loaded = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any("/v1/classify?model=cifar10-cnn" in url for url in loaded)  # the check saw the page's calls
    assert any(url.endswith("/page/page.js") for url in loaded)
    refused = [entry["message"] for entry in page.get_log("browser")
               if "Content Security Policy" in entry["message"]]
    assert refused == []


def test_a_phone_sized_window_does_not_scroll_sideways(page, tmp_path):
    long_name = tmp_path / ("a-photo-with-a-very-long-name-that-has-no-spaces-" * 3 + "cat.jpg")
    long_name.write_bytes((EXAMPLES / "cat.jpg").read_bytes())
    page.set_window_size(360, 740)
    upload(page, long_name, EXAMPLES / "deer.jpg")
    cards(page, 2)
    width, scroll_width, client_width = page.execute_script(
        "const root = document.documentElement;"
        "return [window.innerWidth, root.scrollWidth, root.clientWidth]")
    assert width <= 360
    assert scroll_width <= client_width, "the page is wider than a 360-pixel screen"


def test_the_keyboard_reaches_every_control(page):
    """From the top of a fresh page, Tab goes to the model picker, the file input (labelled),
    the classes shown and the clear button, each with a visible focus; Enter on the button
    clears the results."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    reached = []
    for _ in range(4):
        ActionChains(page).send_keys(Keys.TAB).perform()
        active = page.switch_to.active_element
        reached.append(active.get_attribute("id"))
        outline = page.execute_script("return getComputedStyle(arguments[0]).outlineStyle", active)
        assert outline != "none", f"{reached[-1]} shows no focus"
    assert reached == ["model-choice", "files", "top-k", "clear"]
    label = page.find_element(By.CSS_SELECTOR, "label[for=files]").text
    assert label == "Choose one or more images"
    assert page.find_element(By.CSS_SELECTOR, "label[for=model-choice]").text == "Model"
    assert page.find_element(By.ID, "results").get_attribute("aria-live") == "polite"

    upload(page, EXAMPLES / "bird.jpg")
    cards(page, 1)
    ActionChains(page).send_keys(Keys.ENTER).perform()  # the clear button still has the focus
    wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#results > .result") == [])


def test_too_large_and_unreachable_are_said_in_words(browser, server_factory):
    """A file over the server's body limit is refused before it is sent; a stopped server
    is 'not reachable', on the image and in the health line."""
    from selenium.webdriver.common.by import By

    srv = server_factory(model_path=BUNDLED, max_message_bytes=20_000)
    browser.set_window_size(1200, 900)
    open_page(browser, srv.http_address)
    upload(browser, EXAMPLES / "ship-256.png")  # 39 KB
    [big] = cards(browser, 1)
    assert big["state"] == "error"
    assert big["status"] == "Too large: 39 KiB, and the server takes at most 20 KiB in one request."

    srv.stop()
    upload(browser, EXAMPLES / "cat.jpg")
    _, cat = cards(browser, 2)
    assert cat["state"] == "error"
    assert cat["status"].startswith("The server could not be reached")
    health = browser.find_element(By.ID, "health")
    assert health.get_attribute("data-state") == "unreachable"
    assert health.text == "Server not reachable: is it running?"


def test_the_model_picked_among_those_served_answers(browser, server_factory):
    """Served from the bundled repository: the picker lists every model with its accuracy, the
    default model (cifar10-cnn) first chosen; an image sent after picking airbench94's INT8
    copy is answered by it, and its card says so."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    names = ["cifar10-airbench94", "cifar10-airbench94-int8", "cifar10-cnn", "cifar10-cnn-int8"]
    srv = server_factory(model_repository=str(REPOSITORY))
    browser.set_window_size(1200, 900)
    open_page(browser, srv.http_address)
    picker = Select(wait(browser, lambda d: len(Select(d.find_element(By.ID, "model-choice")).options)
                         == len(names) and d.find_element(By.ID, "model-choice")))
    options = {option.text.split()[0]: option.text for option in picker.options}
    assert list(options) == names and all(text.split()[1] == "1" for text in options.values())
    assert all(text.endswith(" %)") for text in options.values())
    assert picker.first_selected_option.text == options["cifar10-cnn"]
    assert browser.find_element(By.ID, "model").text.startswith("Model cifar10-cnn, version 1: ")

    upload(browser, EXAMPLES / "cat.jpg")
    cards(browser, 1)
    picker.select_by_visible_text(options["cifar10-airbench94-int8"])
    assert browser.find_element(By.ID, "model").text.startswith("Model cifar10-airbench94-int8, version 1: ")
    upload(browser, EXAMPLES / "cat.jpg")
    first, second = cards(browser, 2)
    assert first["verdict"].split()[0].lower() == second["verdict"].split()[0].lower() == "cat"
    by = [card.find_element(By.CSS_SELECTOR, ".by").text
          for card in browser.find_elements(By.CSS_SELECTOR, "#results > .result")]
    assert by == ["by cifar10-cnn 1", "by cifar10-airbench94-int8 1"]
    assert srv.metrics.images.labels("cifar10-airbench94-int8", "1")._value.get() == 1
