"""Cookie sessions for browsers, and the development login (API.md, Identity)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint, Response, jsonify, request

from app.auth import COOKIE_NAME, Identity, token_from
from app.core.services import services
from app.errors import Forbidden, NotFound, Unauthorized
from app.web.contract import documented
from app.web.requests import caller, json_body
from app.web.wire import Shape, UserRef

blueprint = Blueprint("session", __name__)


class DevLogin(BaseModel):
    model_config = ConfigDict(strict=True)
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
    roles: list[Annotated[str, StringConstraints(max_length=32)]] = Field(default_factory=list, max_length=8)


class SessionOpened(Shape):
    user: UserRef
    expires_at: int = Field(description="the token's expiry, Unix seconds")


class SignedOut(Shape):
    signed_out: bool


class DevToken(Shape):
    token: str = Field(description="a JWT for `Authorization: Bearer`; the cookie is set too")
    user: UserRef


def _with_cookie(body: dict[str, Any], token: str, identity: Identity) -> Response:
    response = jsonify(body)
    response.set_cookie(
        COOKIE_NAME,
        token,
        expires=int(identity.expires_at),
        httponly=True,
        samesite="Lax",
        secure=request.scheme == "https",
        path="/",
    )
    return response


@blueprint.post("/api/session")
@documented(
    "Exchange a bearer token for the `parley_token` cookie (browsers)",
    description="The token must come as `Authorization: Bearer <jwt>` here; the cookie is not accepted.",
    response=SessionOpened,
)
async def open_session() -> Response:
    header = request.headers.get("Authorization", "")
    token = token_from(request.headers, {})
    if not header or token is None:
        raise Unauthorized("send the token as `Authorization: Bearer <jwt>`", code="unauthenticated")
    identity = await caller()
    return _with_cookie({"user": identity.public, "expires_at": int(identity.expires_at)}, token, identity)


@blueprint.delete("/api/session")
@documented("Clear the `parley_token` cookie", response=SignedOut, auth=False)
async def close_session() -> Response:
    response = jsonify({"signed_out": True})
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


def _user_id_for(name: str) -> str:
    return "dev-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "user")


@blueprint.post("/api/dev/login")
@documented(
    "Development login: a token and the cookie for any name",
    description=(
        "Only when `PARLEY_DEV_LOGIN=1`; otherwise 404. Grants only the `roles` that "
        "`PARLEY_DEV_ROLES` allows (403 `role_not_allowed` for any other)."
    ),
    body=DevLogin,
    response=DevToken,
    errors=[NotFound, (Forbidden, "role_not_allowed")],
    auth=False,
)
async def dev_login() -> Response:
    parley = services()
    if not parley.settings.dev_login or not parley.auth.can_issue:
        raise NotFound("development login is off")
    login = await json_body(DevLogin)
    # Anyone may use the development login, so it grants a role only where the operator
    # allowed it (PARLEY_DEV_ROLES); asking for another is refused, not silently dropped.
    refused = sorted(set(login.roles) - parley.settings.dev_roles)
    if refused:
        raise Forbidden(
            f"the development login may not grant {', '.join(refused)} (allow it with PARLEY_DEV_ROLES)",
            code="role_not_allowed",
        )
    token = parley.auth.issue(
        _user_id_for(login.name), login.name, ttl_s=parley.settings.dev_token_ttl_s, roles=login.roles or None
    )
    identity = await parley.auth.verify(token)
    await parley.users.remember(identity)
    return _with_cookie({"token": token, "user": identity.public}, token, identity)
