"""Roles: the one place that decides what a token's `roles` allow (API.md, Identity).

Roles come only from a verified token (`Identity.roles`); the development login hands out a
role only if `PARLEY_DEV_ROLES` lists it (app/api/session.py). Each endpoint that needs a role
says so with `require_role(identity, ADMIN)` at its top.
"""

from __future__ import annotations

from app.auth import Identity
from app.errors import Forbidden

# May post platform-wide broadcasts (FR-032).
ADMIN = "admin"
# An external analysis service: may publish a discussion's common-ground analysis.
ANALYZER = "analyzer"
ROLES = frozenset({ADMIN, ANALYZER})


def has_role(identity: Identity, role: str) -> bool:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return role in identity.roles


def require_role(identity: Identity, role: str) -> None:
    """403 unless the caller's token carries `role`."""
    if not has_role(identity, role):
        raise Forbidden(f"this needs the {role!r} role", code="role_required")
