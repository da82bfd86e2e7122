"""The API's own description: `GET /openapi.json` and a readable page of it at `GET /docs`.

Both are built once per app from the routes' declarations (`app.api.openapi`), on first request.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, jsonify

from app.api.openapi import build
from app.api.openapi_page import STYLE, render
from app.web.contract import documented
from app.web.http_security import policy_with_inline_style

blueprint = Blueprint("reference", __name__)

CACHE_KEY = "parley.openapi"


def document() -> dict[str, Any]:
    cached: dict[str, Any] | None = current_app.extensions.get(CACHE_KEY)
    if cached is None:
        cached = current_app.extensions[CACHE_KEY] = build(current_app)
    return cached


@blueprint.get("/openapi.json")
@documented("This document: OpenAPI 3.1", response=dict[str, Any], auth=False)
async def openapi_json() -> Response:
    return jsonify(document())


@blueprint.get("/docs")
@documented("A readable page of this document", media_type="text/html", auth=False)
async def docs() -> Response:
    response = Response(render(document()), content_type="text/html; charset=utf-8")
    # The page's one inline <style>, allowed by its hash; everything else as on every page.
    response.headers["Content-Security-Policy"] = policy_with_inline_style(STYLE)
    return response
