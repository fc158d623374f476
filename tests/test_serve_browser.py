"""The dashboard in a real headless Chromium (Selenium): a run moves from waiting to completed live."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import durable_json, durable_json_in_process, write_module
from test_serve_http import ServeProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# docs/dashboard.png is this test's screenshot: set DURABLE_SCREENSHOT=docs/dashboard.png to refresh it
SCREENSHOT_ENV = "DURABLE_SCREENSHOT"

FLOWS = """
    from durable_cli import define_hook, get_step_metadata, sleep, start_child, step, workflow

    approval = define_hook("approval")


    @step(retry_delay="0s")
    def reserve(order):
        if get_step_metadata().attempt == 1:
            raise ConnectionError("inventory service timed out")
        return {"order": order, "reserved": True}


    @step
    def ship(order, decision):
        return {"order": order, "shipped": decision["approved"]}


    @workflow
    def notify(order):
        return "customer told about " + order


    @workflow
    def fulfil(order):
        reserve(order)
        sleep("1s")
        start_child(notify, order).result()
        for decision in approval.create(token="approve-" + order, timeout="2 days"):
            return ship(order, decision)
"""


def _chromium_or_skip() -> None:
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: install chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    pytest.skip("chromium and chromium-driver are not installed")


def _chromium(javascript: bool = True) -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, with a profile of its own."""
    _chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="durable-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1280,1100", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    yield from _chromium()


@pytest.fixture
def browser_without_javascript() -> Iterator[Any]:
    yield from _chromium(javascript=False)


def test_a_payload_delivered_through_the_form_completes_the_run_live_on_the_dashboard(
        tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    write_module(tmp_path, "flows", FLOWS)
    server = ServeProcess(tmp_path, "--tick", "--tick-interval", "0.3s")
    try:
        code, run, err = durable_json("run", "flows:fulfil", "A-1042", dir=tmp_path / "journals", cwd=tmp_path)
        assert code == 0, err
        wait = WebDriverWait(browser, 15, poll_frequency=0.1)

        browser.get(f"{server.url}/")
        row = f'tr[data-run-id="{run["run_id"]}"]'
        wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, f"{row} .badge"), "waiting"))
        assert browser.find_element(By.CSS_SELECTOR, '.chip[data-status="waiting"] .count').text == "1"
        browser.find_element(By.CSS_SELECTOR, f"{row} a").click()

        form = wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, 'form.deliver[data-token="approve-A-1042"]')))
        assert browser.find_element(By.ID, "run-status").text == "waiting"
        payload = form.find_element(By.TAG_NAME, "textarea")
        payload.clear()
        payload.send_keys('{"approved": true, "by": "ops@example.com"}')
        form.find_element(By.TAG_NAME, "button").click()

        wait.until(seen.text_to_be_present_in_element((By.ID, "run-status"), "completed"))
        assert "queued" in browser.find_element(By.ID, "notice").text
        timeline = browser.find_element(By.ID, "timeline").text
        assert "2 attempts" in timeline and "inventory service timed out" in timeline
        assert "approve-A-1042" in timeline and "wakes" in timeline
        assert browser.find_elements(By.CSS_SELECTOR, "form.deliver") == []
        assert not browser.find_element(By.ID, "cancel").is_displayed()
        wait.until(seen.text_to_be_present_in_element((By.ID, "live"), "live"))
        assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
        screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
    finally:
        assert server.stop() == 0, server.log.read_text()


CHATTY = """
    from durable_cli import define_hook, get_writable, sleep, step, workflow

    go = define_hook("go")


    @step
    def say(word):
        get_writable("out").write(word)


    @workflow
    def chatty(doc):
        say("hello")
        for _ in go.create(token="go-" + doc):
            break
        say("bye")
        sleep("1h")
"""


def test_a_run_page_follows_its_stream_live_and_cancels_after_a_confirmation(tmp_path: Path, browser: Any) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    write_module(tmp_path, "flows", CHATTY)
    server = ServeProcess(tmp_path, "--tick", "--tick-interval", "0.2s")
    try:
        code, run, err = durable_json_in_process("run", "flows:chatty", "B-7", dir=tmp_path / "journals", cwd=tmp_path)
        assert code == 0, err
        wait = WebDriverWait(browser, 15, poll_frequency=0.1)
        browser.get(f"{server.url}/runs/{run['run_id']}")
        chunks = '[data-stream="out"] ol.chunks'
        wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, chunks), "hello"))
        assert browser.find_elements(By.CSS_SELECTOR, "svg.trace rect.bar.wait.current")

        assert httpx.post(f"{server.url}/api/resume/go-B-7", json={}).status_code == 202
        wait.until(seen.text_to_be_present_in_element((By.CSS_SELECTOR, chunks), "bye"))  # no reload
        wait.until(seen.text_to_be_present_in_element((By.ID, "run-status"), "sleeping"))
        wait.until(seen.visibility_of_element_located((By.ID, "wake")))
        assert browser.find_elements(By.CSS_SELECTOR, "svg.trace rect.bar.sleep.current")

        browser.find_element(By.ID, "cancel").click()
        wait.until(seen.alert_is_present()).accept()
        wait.until(seen.text_to_be_present_in_element((By.ID, "notice"), "Cancel of run"))
        wait.until(seen.text_to_be_present_in_element((By.ID, "run-status"), "cancelled"))
        assert [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"] == []
    finally:
        assert server.stop() == 0, server.log.read_text()


def test_the_runs_list_and_a_run_page_read_with_javascript_off(tmp_path: Path, browser_without_javascript: Any) -> None:
    from selenium.webdriver.common.by import By

    browser = browser_without_javascript
    write_module(tmp_path, "flows", FLOWS)
    server = ServeProcess(tmp_path)
    try:
        code, run, err = durable_json_in_process("run", "flows:fulfil", "C-3", dir=tmp_path / "journals", cwd=tmp_path)
        assert code == 0, err
        browser.get(f"{server.url}/?status=sleeping")
        assert browser.find_element(By.ID, "live").text == "static page"  # the script did not run
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-run-id="{run["run_id"]}"]')
        assert row.find_element(By.CSS_SELECTOR, ".badge").text == "sleeping"
        assert browser.find_element(By.CSS_SELECTOR, '.chip[data-status="sleeping"] .count').text == "1"
        row.find_element(By.TAG_NAME, "a").click()
        assert browser.find_element(By.ID, "run-status").text == "sleeping"
        assert "2 attempts" in browser.find_element(By.ID, "timeline").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg.trace rect.bar")) >= 3
    finally:
        assert server.stop() == 0, server.log.read_text()
