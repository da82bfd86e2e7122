"""The API's own description: `GET /openapi.json` and a readable page of it at `GET /docs`.

Both are built once per app from the routes' declarations (`app.openapi`), on first request.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, current_app, jsonify

from ..contract import documented
from ..openapi import build
from ..openapi_page import render

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
    return Response(render(document()), content_type="text/html; charset=utf-8")
