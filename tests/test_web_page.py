"""The demo web page at ``/``, driven in headless Chromium (Debian's ``chromium`` + ``chromium-driver``).

A real uvicorn gateway serves the committed demo model and the page. The browser uploads a synthetic image,
types labels and clicks Classify; the top label it shows must equal ``/v1/classify``'s answer for the same
image and labels, and the model name and version it shows must equal ``/v1/models``. Screenshots go to
``$LIT_TEST_ARTIFACTS`` (default ``tests/artifacts/``, ignored by git).

Chromium is required, not optional: without it these tests fail and say how to install it
(``bash scripts/system-deps.sh``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from harness.gateway import ROOT, running_gateway
from harness.images import LABELS
from harness.repositories import PAIR, pair_environment
from tests.samples import images

ARTIFACTS = Path(os.environ.get("LIT_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
WAIT_S = 20
KEY = "web-page-test-key"


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "the web page tests need Debian's chromium and chromium-driver: run `bash scripts/system-deps.sh`"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    chrome = webdriver.Chrome(options=options, service=Service(driver))  # no Selenium Manager download
    chrome.set_page_load_timeout(WAIT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(tmp_path_factory.mktemp("web")) as url:
        yield url


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "synthetic.png"
    path.write_bytes(images(1, offset=5)[0])
    return path


def wait(browser: WebDriver, condition, timeout: float = WAIT_S):
    return WebDriverWait(browser, timeout).until(condition)


def screenshot(browser: WebDriver, name: str) -> Path:
    """The whole page (not just the window), through the DevTools protocol, as a PNG test artefact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    # Captured beyond the viewport, the page is laid out again without a scroll bar: as wide as the window.
    width = max(size["width"], browser.execute_script("return window.innerWidth"))
    clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n"), path
    return path


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(f"{url}/")
    wait(browser, lambda b: b.find_element(By.ID, "model").get_attribute("data-version"))


def classify_in_page(browser: WebDriver, picture: Path, labels: list[str] | None) -> list[str]:
    """Upload, type the labels (or keep the chosen label set), click, and return the labels shown."""
    browser.find_element(By.ID, "image").send_keys(str(picture))
    if labels is not None:
        box = browser.find_element(By.ID, "labels")
        box.clear()
        box.send_keys("\n".join(labels))
    before = browser.find_element(By.ID, "results").get_attribute("innerHTML")
    browser.find_element(By.ID, "classify").click()
    wait(browser, lambda b: b.find_element(By.ID, "results").get_attribute("innerHTML") != before)
    rows = browser.find_elements(By.CSS_SELECTOR, "#results li.result")
    return [row.get_attribute("data-label") for row in rows]


def api_classify(url: str, picture: Path, **fields) -> list[str]:
    response = httpx.post(
        f"{url}/v1/classify",
        files=[("images", (picture.name, picture.read_bytes(), "image/png"))],
        data=fields,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["results"][0]["predictions"]]


def test_page_classifies_like_the_api(browser: WebDriver, server: str, picture: Path) -> None:
    labels = LABELS[:6]
    open_page(browser, server)
    info = httpx.get(f"{server}/v1/models", timeout=10).json()
    model = browser.find_element(By.ID, "model")
    assert model.get_attribute("data-name") == info["name"]
    assert model.get_attribute("data-version") == str(info["version"])
    assert info["name"] in model.text and f"version {info['version']}" in model.text
    assert not browser.find_element(By.ID, "model-choice").is_displayed()  # one model: no picker

    shown = classify_in_page(browser, picture, labels)
    expected = api_classify(server, picture, labels=labels)
    assert sorted(shown) == sorted(labels)
    assert shown == expected
    assert browser.find_element(By.ID, "top-label").text == expected[0]
    assert re.match(r"\d+ ms\b", browser.find_element(By.ID, "latency").text)
    widths = [
        float(e.get_attribute("style").split("width:")[1].split("%")[0])
        for e in browser.find_elements(By.CSS_SELECTOR, "#results .fill")
    ]
    assert widths == sorted(widths, reverse=True) and widths[0] > 0  # the bar chart, best first
    assert not browser.find_element(By.ID, "error").is_displayed()
    screenshot(browser, "web_page.png")


def test_page_fits_a_phone(browser: WebDriver, server: str, picture: Path) -> None:
    browser.set_window_size(390, 844)
    try:
        open_page(browser, server)
        classify_in_page(browser, picture, LABELS[:4])
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        screenshot(browser, "web_page_phone.png")
    finally:
        browser.set_window_size(1280, 900)


def test_label_set_picker(browser: WebDriver, server: str, picture: Path) -> None:
    labels = LABELS[2:9]
    put = httpx.put(f"{server}/v1/label-sets/web_shapes", json={"labels": labels}, timeout=60)
    assert put.status_code == 200, put.text
    open_page(browser, server)
    wait(browser, ec.presence_of_element_located((By.CSS_SELECTOR, "#label-set option[value='web_shapes']")))
    Select(browser.find_element(By.ID, "label-set")).select_by_value("web_shapes")
    assert not browser.find_element(By.ID, "labels").is_enabled()
    shown = classify_in_page(browser, picture, None)
    assert shown == api_classify(server, picture, label_set="web_shapes")


def test_model_picker(browser: WebDriver, tmp_path: Path, picture: Path) -> None:
    """A gateway serving lit_demo and lit_other (the default) and naming lit_missing, which fails to load:
    the page offers the loaded two and sends the one chosen with classify."""
    with running_gateway(tmp_path, **pair_environment(tmp_path)) as url:
        open_page(browser, url)
        choice = browser.find_element(By.ID, "model-choice")
        wait(browser, lambda b: choice.is_displayed())
        picker = Select(browser.find_element(By.ID, "model-picker"))
        assert [o.get_attribute("value") for o in picker.options] == PAIR
        assert picker.first_selected_option.get_attribute("value") == "lit_other"
        assert "(default)" in picker.first_selected_option.text
        missing = picker.options[PAIR.index("lit_missing")]
        assert not missing.is_enabled() and "failed" in missing.text
        model, latency = browser.find_element(By.ID, "model"), browser.find_element(By.ID, "latency")
        assert model.get_attribute("data-name") == "lit_other" and "lit_other version 1" in model.text

        shown = classify_in_page(browser, picture, LABELS[:5])
        assert shown == api_classify(url, picture, labels=LABELS[:5])
        assert "model lit_other version 1" in latency.text

        picker.select_by_value("lit_demo")
        assert model.get_attribute("data-name") == "lit_demo" and "lit_demo version 1" in model.text
        shown = classify_in_page(browser, picture, LABELS[1:7])
        assert shown == api_classify(url, picture, labels=LABELS[1:7], model="lit_demo")
        assert "model lit_demo version 1" in latency.text  # the answer's own model: the choice was sent
        screenshot(browser, "web_page_models.png")

        browser.set_window_size(390, 844)
        try:
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"with the model picker the page is {overflow} px wider than a phone screen"
        finally:
            browser.set_window_size(1280, 900)


def test_api_errors_are_shown(browser: WebDriver, server: str, tmp_path: Path) -> None:
    open_page(browser, server)
    error = browser.find_element(By.ID, "error")
    browser.find_element(By.ID, "classify").click()  # no image yet: the page says so itself
    wait(browser, lambda b: error.is_displayed())
    assert "image" in error.text.lower()

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"these are notes, not a picture")
    browser.find_element(By.ID, "image").send_keys(str(not_an_image))
    box = browser.find_element(By.ID, "labels")
    box.clear()
    box.send_keys("red circle\nblue square")
    browser.find_element(By.ID, "classify").click()
    wait(browser, lambda b: "unsupported_image_format" in error.text)
    api = httpx.post(
        f"{server}/v1/classify",
        files=[("images", ("notes.png", not_an_image.read_bytes(), "image/png"))],
        data={"labels": ["red circle", "blue square"]},
        timeout=60,
    ).json()
    assert api["error"]["message"] in error.text  # the API's own message, verbatim
    screenshot(browser, "web_page_error.png")


def test_static_routes(server: str) -> None:
    page = httpx.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from another host
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        response = httpx.get(f"{server}/static/{name}", timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert "http://" not in response.text and "https://" not in response.text
    for missing in ("/static/nope.js", "/static/..%2Fweb.py", "/static/%2e%2e%2fhf_compat.py"):
        response = httpx.get(f"{server}{missing}", timeout=10)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    paths = httpx.get(f"{server}/openapi.json", timeout=10).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


def test_page_with_api_keys(browser: WebDriver, tmp_path: Path, picture: Path) -> None:
    with running_gateway(tmp_path, LIT_API_KEYS=json.dumps([KEY])) as url:
        assert httpx.get(f"{url}/", timeout=10).status_code == 200  # the page itself needs no key
        assert httpx.get(f"{url}/static/app.js", timeout=10).status_code == 200
        browser.get(f"{url}/")
        error = browser.find_element(By.ID, "error")
        wait(browser, lambda b: error.is_displayed())
        assert "401 unauthorized" in error.text
        key = browser.find_element(By.ID, "api-key")
        assert key.is_displayed()  # the page opens the API key field when the server asks for a key
        key.send_keys(KEY, Keys.TAB)
        wait(browser, lambda b: b.find_element(By.ID, "model").get_attribute("data-version"))
        assert not error.is_displayed()
        assert browser.execute_script("return sessionStorage.getItem('lit.apiKey')") == KEY
        assert browser.execute_script("return localStorage.length") == 0
        shown = classify_in_page(browser, picture, LABELS[:3])
        assert len(shown) == 3
        browser.execute_script("sessionStorage.clear()")
