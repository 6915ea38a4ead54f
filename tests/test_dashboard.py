"""The monitors' dashboard in real headless Chromium against a live farm: it loads, shows a running
job's progress live, cancels it from the page (with a reason), and saves screenshots."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas import JobState
from tests.conftest import IN_CI, fresh_database
from tests.factories import ALICE, write_small_shot
from tests.harness import LiveFarm, RedisServer, live_farm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ARTIFACTS = Path(os.environ.get("MATTEFARM_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


@pytest.fixture
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if IN_CI:
            pytest.fail("chromium and chromedriver are missing: scripts/install.sh installs them")
        pytest.skip("chromium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1500,1300"):  # fmt: skip
        options.add_argument(arg)
    session = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    yield session
    session.quit()


@pytest.fixture
def farm(redis_server: RedisServer, postgres_server: str, tmp_path: Path) -> Iterator[LiveFarm]:
    write_small_shot(tmp_path, "sh090", frames=24, width=320, height=180)
    settings = {"synthetic_delay_s": "0.12", "task_frames": "6"}
    with fresh_database(postgres_server) as url, live_farm(tmp_path, redis_server, url, **settings) as running:
        running.start_worker("gpu0")
        yield running


def wait(predicate, timeout: float = 60.0, what: str = "") -> None:
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except StaleElementReferenceException:
            pass  # the page re-rendered the element between finding and reading it: look again
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_the_dashboard_shows_a_running_job_and_cancels_it(farm: LiveFarm, browser) -> None:
    from selenium.webdriver.common.by import By

    spec = {
        "plate": str(farm.root / "sh090/plate/sh090.####.exr"),
        "prompt": "ball, box, car",
        "output_root": str(farm.root / "renders"),
        "show": "demo",
    }
    with farm.client() as client:
        done = client.submit(spec | {"frames": "1001-1006"})
        farm.wait_for(done.id, lambda j: j.state == JobState.SUCCEEDED)
        job = client.submit(spec | {"priority": 60})
    browser.get(f"{farm.url}/dashboard#token={ALICE}&job={job.id}")

    # The tables are redrawn on every poll, so each read is one script: no element goes stale under it.
    row = f'tr.job[data-id="{job.id}"]'

    def row_state() -> str | None:
        return browser.execute_script(f"return document.querySelector('{row}')?.dataset.state ?? null")

    def progress() -> float:
        return browser.execute_script(f"return parseFloat(document.querySelector('{row} .bar > span').style.width)")

    wait(lambda: row_state() == "running", what="a running job")
    first = progress()
    wait(lambda: progress() > first, what="the progress bar to move without a reload")
    wait(lambda: "gpu0@localhost" in browser.find_element(By.ID, "workers").text, what="the worker in the table")
    wait(lambda: "wrote frame" in browser.find_element(By.ID, "log").text
         or "step(s)" in browser.find_element(By.ID, "log").text, what="a task log")  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-running.png"))
    assert "Queues" in browser.page_source and "gpu" in browser.find_element(By.ID, "queues").text

    browser.find_element(By.ID, "btn-cancel").click()  # no reason: refused on the page
    assert "needs a reason" in browser.find_element(By.ID, "control-result").text
    browser.find_element(By.ID, "cancel-reason").send_keys("wrong prompt, resubmitting")
    browser.find_element(By.ID, "btn-cancel").click()
    wait(lambda: row_state() == "canceled", what="the job to show canceled")
    wait(lambda: "wrong prompt, resubmitting" in browser.find_element(By.ID, "events").text, what="the audit line")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-canceled.png"))
    with farm.client() as client:
        final = client.job(job.id)
        events = client.events(job.id)
    assert final.state == JobState.CANCELED and final.error == "canceled by alice: wrong prompt, resubmitting"
    assert any(e.kind == "cancel_requested" and e.actor == "alice" for e in events)
    assert (ARTIFACTS / "dashboard-running.png").stat().st_size > 10_000
