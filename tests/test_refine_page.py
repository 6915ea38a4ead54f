"""The refine page in real headless Chromium: sign in, move through frames by keyboard, click on
the canvas and see the overlay change (its pixels, not the DOM), undo, rename, propagate, deliver,
merge; then the delivered version differs from its parent only in the edited layer over the
propagated frames, and the parent is byte for byte what it was."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from farm_config import Settings
from services.api.app import create_app
from tests.factories import ALICE, WorkerQueue, finished_job, serve, write_small_shot
from tests.test_dashboard import ARTIFACTS, browser, wait  # noqa: F401 - the browser fixture
from workers.io.exr import read_exr_channels

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def served(settings: Settings, farm_root: Path) -> Iterator[tuple[str, str, Settings]]:
    plate = write_small_shot(farm_root, "sh020", frames=24, width=320, height=180)
    job_id = finished_job(settings, plate, farm_root)
    with serve(create_app(settings, queue=WorkerQueue(settings, background=True))) as url:
        yield url, job_id, settings


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_artist_fixes_a_layer_in_the_browser_and_delivers_the_next_version(served, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, job_id, settings = served
    browser.get(f"{url}/jobs/{job_id}/refine")
    browser.find_element(By.ID, "token-input").send_keys(ALICE)
    browser.find_element(By.ID, "token-save").click()  # sign in
    js = browser.execute_script
    ready = lambda: js("return document.getElementById('view').dataset.ready || null")  # noqa: E731
    wait(lambda: ready() is not None, what="the first frame on the canvas")
    state = js("return window.refinePage.state")
    frames = state["frames"]
    layer = state["layers"][0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "refine-signed-in.png"))

    # keyboard: → next frame, shift+→ ten on, home back to the first, end the last
    body = browser.find_element(By.TAG_NAME, "body")
    shown = lambda: js("return +document.getElementById('view').dataset.frame")  # noqa: E731
    body.send_keys(Keys.ARROW_RIGHT)
    wait(lambda: shown() == frames[1], what="→ to move one frame")
    body.send_keys(Keys.SHIFT, Keys.ARROW_RIGHT)
    wait(lambda: shown() == frames[11], what="shift+→ to move ten frames")
    body.send_keys(Keys.END)
    wait(lambda: shown() == frames[-1], what="end")
    body.send_keys(Keys.HOME)
    wait(lambda: shown() == frames[0], what="home")

    # go to a frame the layer is on; find its middle on the canvas from the pixels the page drew
    target = layer["frames"][len(layer["frames"]) // 2]
    for _ in range(frames.index(target)):
        body.send_keys(Keys.ARROW_RIGHT)
    wait(lambda: shown() == target, what="the layer's frame")
    colour = layer["colour"]
    tinted_js = """
      const c = document.getElementById('view'), g = c.getContext('2d');
      const d = g.getImageData(0, 0, c.width, c.height).data, col = arguments[0];
      const pts = [];
      for (let i = 0; i < d.length; i += 4) {
        const dr = Math.abs(d[i] - col[0]) + Math.abs(d[i+1] - col[1]) + Math.abs(d[i+2] - col[2]);
        if (dr < 60) pts.push([(i / 4) % c.width, Math.floor(i / 4 / c.width)]);
      }
      return pts;"""
    before = js(tinted_js, colour)
    assert len(before) > 20, "the layer's outline is drawn in its colour"
    width, height = state["size"]
    idx = np.array(before)
    cx, cy = float(idx[:, 0].mean()), float(idx[:, 1].mean())
    pixel_js = """
      const c = document.getElementById('view');
      const d = c.getContext('2d').getImageData(arguments[0], arguments[1], 1, 1).data;
      return [d[0], d[1], d[2]];"""
    inside_before = js(pixel_js, round(cx), round(cy))
    browser.find_element(By.CSS_SELECTOR, "[data-tool=remove]").click()
    canvas = browser.find_element(By.ID, "view")
    rect = js("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    stamp = ready()
    ActionChains(browser).move_to_element_with_offset(
        canvas, round(cx / width * rect[0] - rect[0] / 2), round(cy / height * rect[1] - rect[1] / 2)
    ).click().perform()
    wait(lambda: ready() != stamp, what="the canvas to redraw after the click")
    inside_after = js(pixel_js, round(cx), round(cy))
    assert inside_after != inside_before, "the negative click took the tint off where it was clicked"
    browser.save_screenshot(str(ARTIFACTS / "refine-after-click.png"))

    stamp = ready()
    browser.find_element(By.ID, "undo").click()
    wait(lambda: ready() != stamp, what="undo")
    assert js(pixel_js, round(cx), round(cy)) == inside_before, "undo brought the tint back"
    stamp = ready()
    ActionChains(browser).move_to_element_with_offset(
        canvas, round(cx / width * rect[0] - rect[0] / 2), round(cy / height * rect[1] - rect[1] / 2)
    ).click().perform()
    wait(lambda: ready() != stamp, what="the click again")

    # rename, then propagate the fix, then deliver
    rename = browser.find_element(By.CSS_SELECTOR, f'.layer[data-name="{layer["name"]}"] input[data-op=rename]')
    rename.send_keys("hero", Keys.ENTER)
    wait(lambda: any(ly["name"] == "hero" for ly in js("return window.refinePage.state.layers")), what="rename")
    stamp = ready()
    browser.find_element(By.ID, "propagate").click()
    wait(lambda: ready() != stamp and "propagated hero" in browser.find_element(By.ID, "result").text, what="propagate")
    done = httpx.get(f"{url}/jobs/{job_id}/refine/progress", headers={"Authorization": f"Bearer {ALICE}"}).json()
    assert done["state"] == "succeeded" and done["worker"], done  # it ran as a farm task, on a worker
    browser.find_element(By.ID, "deliver").click()
    wait(lambda: "delivered v002" in browser.find_element(By.ID, "result").text, what="delivery")
    browser.save_screenshot(str(ARTIFACTS / "refine-delivered.png"))

    # what was delivered: only 'hero' (the edited layer) differs, only on frames the fix reached
    stored = js("return window.refinePage.state")
    hero = next(ly for ly in stored["layers"] if ly["name"] == "hero")
    roto = settings.write_roots[0] / "renders" / "sh020" / "roto"
    parent, child = roto / "v001", roto / "v002"
    parent_hashes = _hashes(parent)
    others = [ly["name"] for ly in stored["layers"] if ly["name"] != "hero"]
    differs = set()
    for old_file in sorted(parent.glob("*.exr")):
        frame = int(old_file.name.split(".")[-2])
        old, _ = read_exr_channels(old_file)
        new, header = read_exr_channels(next(child.glob(f"*.{frame:04d}.exr")))
        assert header["mattefarm/parentVersion"] == "1"
        for name in others:
            assert np.array_equal(new[f"{name}.A"], old[f"{name}.A"]), (frame, name)
        if not np.array_equal(new["hero.A"], old[f"{layer['name']}.A"]):
            differs.add(frame)
    assert differs and differs <= set(hero["keyframes"]) | set(hero["frames"])
    assert target in differs

    # merge another layer into hero from the list: the list shrinks, the earlier versions stay
    if others:
        select = browser.find_element(By.CSS_SELECTOR, f'.layer[data-name="{others[0]}"] select[data-op=merge]')
        from selenium.webdriver.support.ui import Select

        Select(select).select_by_visible_text("hero")
        wait(lambda: all(ly["name"] != others[0] for ly in js("return window.refinePage.state.layers")), what="merge")
    assert _hashes(parent) == parent_hashes
    browser.save_screenshot(str(ARTIFACTS / "refine-merged.png"))

    # the dashboard lists the propagation: the farm task, its worker and its frames
    browser.get(f"{url}/dashboard")
    if browser.find_elements(By.ID, "token-input") and browser.find_element(By.ID, "token-input").is_displayed():
        browser.find_element(By.ID, "token-input").send_keys(ALICE)
        browser.find_element(By.ID, "token-save").click()
    row = f'#propagations tr.propagation[data-id="{done["task_id"]}"]'
    wait(lambda: browser.find_elements(By.CSS_SELECTOR, row), what="the propagation on the dashboard")
    text = browser.find_element(By.CSS_SELECTOR, row).text
    assert "hero" in text and "succeeded" in text and done["worker"] in text, text
    browser.save_screenshot(str(ARTIFACTS / "dashboard-propagations.png"))
