"""The dashboard in a real headless Chromium against the real service, fed over HTTP.

One service and one browser for the module: the scenario is a run that trains calmly for 30 steps,
then its gradient norm spikes; the default rules must open an alert, and the pages must show the
run, its charts, the alert, and new steps as they arrive.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 20
RUN_ID = "run-calm-then-spike"
RUN_NAME = "qwen-0.5b-calm-then-spike"
CHARTS = ("chart-fan", "chart-ess", "chart-clip", "chart-kl", "chart-grad")

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(
        f"browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian: chromium, chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def service(serve: Callable[..., Any], make_step: Callable[..., dict[str, Any]]) -> Any:
    """The service with one run: 30 calm steps, then a gradient spike at step 30."""
    live = serve(dashboard_refresh_ms=400)
    live.create_run(RUN_ID, RUN_NAME)
    calm = live.post_steps(RUN_ID, [make_step(step) for step in range(30)])
    assert calm["accepted"] == 30 and calm["alerts"] == [], calm["alerts"]
    spike = live.post_steps(RUN_ID, [make_step(30, grad_norm=250.0)])
    assert [alert["rule"] for alert in spike["alerts"]] == ["grad_spike"]
    return live


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()


def wait(driver: WebDriver, condition: Callable[[WebDriver], object], message: str) -> object:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition, message)


def text_of(driver: WebDriver, element_id: str) -> str:
    """Rendered text of an element, read in one script call: live refreshes replace elements, so
    a Selenium element handle may go stale between finding and reading it."""
    script = "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';"
    text: str = driver.execute_script(script, element_id)
    return text.strip()


def texts_of(driver: WebDriver, selector: str) -> list[str]:
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim());"
    texts: list[str] = driver.execute_script(script, selector)
    return texts


def trace_names(driver: WebDriver, graph_id: str) -> list[str]:
    """Names of the plotly traces drawn in a ``dcc.Graph`` (empty until it has rendered data)."""
    script = (
        "const plot = document.querySelector(`#${arguments[0]} .js-plotly-plot`);"
        "return plot && plot.data ? plot.data.map(t => t.name || '') : [];"
    )
    names: list[str] = driver.execute_script(script, graph_id)
    return names


def assert_no_severe_logs(driver: WebDriver) -> None:
    """Callback 500s, console errors and uncaught exceptions all arrive as SEVERE entries."""
    severe = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], "\n".join(severe)


def test_run_page_shows_charts_alert_and_live_updates(
    service: Any,
    driver: WebDriver,
    screenshot_dir: Path | None,
    make_step: Callable[..., dict[str, Any]],
) -> None:
    driver.get(f"{service.url}/")
    wait(driver, lambda d: RUN_NAME in text_of(d, "runs-table"), "run missing from runs-table")
    alert_cells = texts_of(driver, "#runs-table td.rw-danger")
    assert alert_cells == ["1"], "open alert count not highlighted"

    driver.find_element(By.LINK_TEXT, RUN_NAME).click()
    wait(driver, lambda d: d.current_url.endswith(f"/runs/{RUN_ID}"), "no navigation to run page")
    wait(driver, lambda d: text_of(d, "run-title") == RUN_NAME, "run title missing")
    for chart in CHARTS:
        wait(driver, lambda d, c=chart: trace_names(d, c), f"{chart} drew no traces")
    assert "median" in trace_names(driver, "chart-fan")
    assert "alerts" in trace_names(driver, "chart-fan"), "spike not marked on the fan chart"
    assert "alerts" in trace_names(driver, "chart-grad"), "spike not marked on the gradient chart"
    wait(driver, lambda d: "grad_spike" in text_of(d, "alert-list"), "alert missing from list")
    assert text_of(driver, "run-last-step") == "30"
    assert text_of(driver, "run-open-alerts") == "1"
    if screenshot_dir is not None:
        driver.save_screenshot(str(screenshot_dir / "run_page.png"))

    service.post_steps(RUN_ID, [make_step(step) for step in range(31, 36)])
    wait(driver, lambda d: text_of(d, "run-last-step") == "35", "page did not update live")
    assert_no_severe_logs(driver)
    assert service.dashboard_errors == []


def test_overview_and_alerts_pages(service: Any, driver: WebDriver) -> None:
    driver.get(f"{service.url}/alerts")
    wait(driver, lambda d: "grad_spike" in text_of(d, "alerts-table"), "alert missing on /alerts")
    driver.find_element(By.LINK_TEXT, "Runs").click()
    wait(driver, lambda d: RUN_NAME in text_of(d, "runs-table"), "overview did not render")
    assert_no_severe_logs(driver)
    assert service.dashboard_errors == []


def test_unknown_run_says_not_found(service: Any, driver: WebDriver) -> None:
    driver.get(f"{service.url}/runs/no-such-run")
    wait(driver, lambda d: "Run not found" in text_of(d, "run-not-found"), "no not-found message")
    assert_no_severe_logs(driver)
    assert service.dashboard_errors == []
