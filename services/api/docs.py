"""The interactive API docs (/docs), served from this API: Swagger UI 5's assets (it reads OpenAPI
3.1) come from the ``fastapi-swagger`` package's resources, not a CDN, so the page works on a farm
network without internet."""

from __future__ import annotations

from pathlib import Path

import fastapi_swagger.resources
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def add_docs(app: FastAPI) -> None:
    """Mount Swagger UI's files and the page that uses them (the app is made with docs_url=None)."""
    app.mount(ASSETS, StaticFiles(directory=Path(fastapi_swagger.resources.__path__[0])), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # "Authorize" once, then every "Try it out" sends the bearer token (kept for the tab only)
            swagger_ui_parameters={"persistAuthorization": False},
        )
