"""The discussion page (`static/index.html`) at `/` and `/d/<id>`.

One HTML shell for both: the page reads the discussion id from its own URL, so a link to a
discussion is just `/d/<id>`. Assets are plain files under `/static/` (no build step).
"""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from app.errors import NotFound
from app.web.contract import documented

blueprint = Blueprint("pages", __name__)


async def _shell() -> Response:
    response = await current_app.send_static_file("index.html")
    # The shell is tiny and names the assets; always revalidate so a deploy shows at once.
    response.headers["Cache-Control"] = "no-cache"
    return response


@blueprint.get("/")
@documented("The discussion page", media_type="text/html", auth=False, errors=[NotFound])
async def home() -> Response:
    return await _shell()


@blueprint.get("/d/<discussion_id>")
@documented(
    "The discussion page, opened on one discussion",
    description="The same HTML shell as `/`: the page reads the id from its URL.",
    media_type="text/html",
    auth=False,
    errors=[NotFound],
)
async def discussion(discussion_id: str) -> Response:
    return await _shell()
