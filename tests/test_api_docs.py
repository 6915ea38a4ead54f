"""/docs works on a farm network without internet: Swagger UI's assets come from this API, the
OpenAPI document carries the bearer scheme so "Authorize" then "Try it out" sends the token, and
in real headless Chromium the page draws the operations (pixels checked, screenshot kept)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from services.api.app import create_app
from tests.factories import RecordingQueue, serve
from tests.test_dashboard import ARTIFACTS, browser, wait  # noqa: F401 - the browser fixture


def test_the_docs_page_loads_its_assets_from_this_api(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    for source in sources:
        asset = api.get(source)
        assert asset.status_code == 200 and len(asset.content) > 500, source
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_openapi_declares_the_bearer_scheme_on_authenticated_calls(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "HTTPBearer": {"type": "http", "scheme": "bearer", "description": schemes["HTTPBearer"]["description"]}
    }
    submit = spec["paths"]["/jobs"]["post"]
    assert submit["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_the_bearer_scheme_keeps_the_farms_messages(api: TestClient) -> None:
    for header in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        answer = api.get("/jobs", headers=header)
        assert answer.status_code == 401
        assert "Authorization: Bearer" in answer.json()["message"]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_swagger_ui_draws_the_operations_offline_in_chromium(settings: Settings, browser) -> None:  # noqa: F811
    import cv2
    from selenium.webdriver.common.by import By

    with serve(create_app(settings, queue=RecordingQueue())) as url:
        browser.get(f"{url}/docs")
        count = lambda: browser.execute_script("return document.querySelectorAll('.opblock').length")  # noqa: E731
        wait(lambda: count() > 10, what="Swagger UI to draw the operations")
        assert browser.find_elements(By.CSS_SELECTOR, ".btn.authorize"), "no Authorize button: no bearer scheme"
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(name.startswith(url) for name in loaded), loaded  # nothing from elsewhere
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "api-docs.png"
        browser.save_screenshot(str(shot))
    pixels = cv2.imread(str(shot))
    # Swagger UI's coloured method badges (GET blue, POST green) are on screen, not a blank page
    blue = (pixels[..., 0] > 200) & (pixels[..., 1] > 120) & (pixels[..., 1] < 190) & (pixels[..., 2] < 120)
    green = (pixels[..., 1] > 170) & (pixels[..., 0] < 170) & (pixels[..., 2] < 100)
    assert np.count_nonzero(blue) > 500 and np.count_nonzero(green) > 500
