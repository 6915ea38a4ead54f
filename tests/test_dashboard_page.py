"""The monitors' dashboard in real headless Chromium over a farm with history: sign-in, the
history graphs (their pixels), server-side search, state chips, sort and pages, bulk priority,
controls that fit each job's state, a failed job's block-list cleared, the frame grid per stage,
drain and undrain, and the layout at 900 px. Screenshots are kept as artifacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from farm_config import Settings
from schemas import WorkerInfo
from services.api.app import create_app
from services.composition import build_worker, open_stores
from tests.factories import ADMIN, RecordingQueue, run_tasks, serve, submit
from tests.test_dashboard import ARTIFACTS, browser, wait  # noqa: F401 - the browser fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def farm(settings: Settings, shot: Path, farm_root: Path) -> Iterator[tuple[str, dict[str, str], Settings]]:
    """A store with a finished job, a failed one (its host block-listed), 30 waiting jobs over
    three shows and a worker list; the API serves it on a port."""
    settings = settings.model_copy(update={"dispatcher": False})  # the states stay as made here
    ids: dict[str, str] = {}
    ids["done"] = submit(settings, shot, farm_root, show="alpha")
    ids["failed"] = submit(settings, shot, farm_root, show="beta", prompt="car")
    good = build_worker(settings, register=False, broker=False)
    bad = build_worker(settings.model_copy(update={"fault": "crash@segment"}), register=False, broker=False)
    try:
        good.stores.history.sample(60.0)
        run_tasks(good, ids["done"])
        run_tasks(bad, ids["failed"])
    finally:
        good.close()
        bad.close()
    for n in range(30):
        submit(settings, shot, farm_root, show=("alpha", "beta", "gamma")[n % 3], priority=10 + n)
    stores = open_stores(settings)
    try:
        for name in ("gpu0@node1:0", "gpu1@node1:0"):
            stores.workers.register(WorkerInfo(name=name, host="node1", pid=1, queues=["gpu"], device="cuda",
                                               gpu_name="NVIDIA RTX A4000", gpu_memory_total_mb=16376))  # fmt: skip
        stores.history.sample(1.0)
    finally:
        stores.close()
    with serve(create_app(settings, queue=RecordingQueue())) as url:
        yield url, ids, settings


def test_the_dashboard_at_the_level_of_a_farm_monitor(farm, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    url, ids, _ = farm
    js = browser.execute_script
    browser.get(f"{url}/dashboard")
    browser.find_element(By.ID, "token-input").send_keys(ADMIN)
    browser.find_element(By.ID, "token-save").click()
    rows = lambda: js("return [...document.querySelectorAll('tr.job')].map(r => r.dataset.id)")  # noqa: E731
    wait(lambda: len(rows()) == 32, what="the jobs to load")
    assert ADMIN not in browser.current_url
    wait(lambda: js("return document.querySelectorAll('#c-frames rect').length") > 0, what="the frames graph")
    assert "ops (admin)" in browser.find_element(By.ID, "me").text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-overview.png"))
    # the graphs are on screen: the frames-per-minute bar (blue) and the failures (retryable, amber)
    charts = browser.find_element(By.ID, "charts").screenshot_as_png
    picture = cv2.imdecode(np.frombuffer(charts, np.uint8), cv2.IMREAD_COLOR)
    blue = (picture[..., 0] > 200) & (picture[..., 1] > 120) & (picture[..., 1] < 190) & (picture[..., 2] < 110)
    amber = (picture[..., 2] > 180) & (picture[..., 1] > 130) & (picture[..., 1] < 175) & (picture[..., 0] < 60)
    assert blue.sum() > 20 and amber.sum() > 20, (int(blue.sum()), int(amber.sum()))
    legend = browser.find_element(By.ID, "failure-legend").text
    assert "retryable 3" in legend  # the crashing segment task's three attempts

    # server-side search, state chips, sort, pages
    browser.find_element(By.ID, "f-q").send_keys("gamma")
    wait(lambda: len(rows()) == 10, what="the search to narrow the list")
    js("document.getElementById('f-clear').click()")
    wait(lambda: len(rows()) == 32, what="clearing the filters")
    js("document.querySelector('.chip[data-state=\"failed\"]').click()")
    wait(lambda: rows() == [ids["failed"]], what="the failed chip to filter")
    js("document.querySelector('.chip[data-state=\"failed\"]').click()")
    wait(lambda: len(rows()) == 32, what="the chip to toggle off")
    js("document.querySelector('th.sort[data-sort=\"priority\"]').click()")
    priorities = lambda: js("return [...document.querySelectorAll('tr.job td:nth-child(6)')].map(c => +c.textContent)")  # noqa: E731
    sorted_by = lambda: js("return document.querySelector('th.sorted')?.textContent")  # noqa: E731
    wait(lambda: sorted_by() == "priority ▼" and priorities()[:3] == [50, 50, 39], what="sorting by priority")
    js("document.querySelector('th.sort[data-sort=\"priority\"]').click()")  # again: ascending
    wait(lambda: sorted_by() == "priority ▲" and priorities()[:3] == [10, 11, 12], what="ascending")
    js("const s = document.getElementById('page-size'); s.value = '25'; s.dispatchEvent(new Event('change'))")
    wait(lambda: browser.find_element(By.ID, "page-info").text == "1–25 of 32", what="25 a page")
    browser.find_element(By.ID, "next").click()
    wait(lambda: browser.find_element(By.ID, "page-info").text == "26–32 of 32", what="the second page")
    browser.find_element(By.ID, "prev").click()
    wait(lambda: browser.find_element(By.ID, "page-info").text == "1–25 of 32", what="back to the first page")

    # bulk: tick two waiting jobs (priorities 10 and 11), set their priority
    first_two = rows()[:2]
    for job_id in first_two:
        js(f"document.querySelector('input.pick[data-id=\"{job_id}\"]').click()")
    assert browser.find_element(By.ID, "bulk-count").text == "2 selected"
    browser.find_element(By.ID, "bulk-priority").send_keys("77")
    js("document.querySelector('[data-bulk=\"priority\"]').click()")
    wait(lambda: "priority: 2 done" in browser.find_element(By.ID, "bulk-result").text, what="the bulk priority")
    wait(lambda: priorities()[:2] == [12, 13], what="the list to re-sort: the two left the head of the list")
    for job_id in first_two:
        answer = httpx.get(f"{url}/jobs/{job_id}", headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.json()["priority"] == 77

    # a failed job: Retry fits, Pause does not; its block-list is shown and cleared; the frame grid
    browser.find_element(By.ID, "f-q").send_keys(ids["failed"][:6])  # an abbreviated id finds it
    wait(lambda: rows() == [ids["failed"]], what="the search by id")
    js(f"document.querySelector('tr.job[data-id=\"{ids['failed']}\"] td:nth-child(2)').click()")
    wait(lambda: js("return document.getElementById('job-panel').dataset.state") == "failed", what="the failed job")
    disabled = lambda b: js(f"return document.getElementById('{b}').disabled")  # noqa: E731
    assert not disabled("btn-retry") and disabled("btn-pause") and disabled("btn-resume") and disabled("btn-cancel")
    wait(lambda: "blocked" in browser.find_element(By.ID, "blocklist").text, what="the block-list")
    grid = browser.find_element(By.ID, "grid").screenshot_as_png
    cells = cv2.imdecode(np.frombuffer(grid, np.uint8), cv2.IMREAD_COLOR)
    green = (cells[..., 1] > 140) & (cells[..., 2] < 90) & (cells[..., 0] < 100)
    red = (cells[..., 2] > 220) & (cells[..., 1] < 110) & (cells[..., 0] < 110)
    assert green.sum() > 50 and red.sum() > 50, (int(green.sum()), int(red.sum()))  # detect done, segment dead
    browser.save_screenshot(str(ARTIFACTS / "dashboard-failed-job.png"))
    browser.find_element(By.ID, "btn-unblock").click()
    wait(lambda: browser.find_element(By.ID, "blocklist").text == "none", what="the block-list to clear")
    wait(lambda: "block-list cleared" in browser.find_element(By.ID, "events").text, what="the audit line")

    # a finished job: nothing to pause, resume, retry or cancel
    js("document.getElementById('f-clear').click()")
    browser.find_element(By.ID, "f-q").send_keys(ids["done"])
    wait(lambda: rows() == [ids["done"]], what="the search by id")
    js(f"document.querySelector('tr.job[data-id=\"{ids['done']}\"] td:nth-child(2)').click()")
    wait(lambda: js("return document.getElementById('job-panel').dataset.state") == "succeeded", what="the done job")
    assert all(disabled(b) for b in ("btn-pause", "btn-resume", "btn-retry", "btn-cancel", "btn-priority"))

    # drain and undrain
    state = lambda: js("return document.querySelector('tr.worker[data-name=\"gpu0@node1:0\"]').dataset.state")  # noqa: E731
    js("document.querySelector('[data-drain=\"gpu0@node1:0\"]').click()")
    wait(lambda: state() == "stopping", what="the drain")
    js("document.querySelector('[data-undrain=\"gpu0@node1:0\"]').click()")
    wait(lambda: state() == "online", what="the undrain")

    # readable at 900 px: one column, nothing wider than the window but the tables' own scrollers
    browser.set_window_size(900, 1300)
    wait(lambda: js("return document.getElementById('charts').getBoundingClientRect().width") < 900, what="reflow")
    overflow = js("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a 900px window"
    columns = js("return getComputedStyle(document.getElementById('app')).gridTemplateColumns.split(' ').length")
    assert columns == 1
    browser.save_screenshot(str(ARTIFACTS / "dashboard-900px.png"))
    browser.set_window_size(1500, 1300)
