"""Notification preferences (FR-010): what a user is notified of, read and changed.

`DEFAULT_PREFERENCES` (app/domain/notifications.py) is what a user who never chose gets; a
user has a `NotificationPreferences` row only once they changed something.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.models import NotificationPreferences, utcnow
from app.domain.notifications import DEFAULT_PREFERENCES


def preferences_of(row: NotificationPreferences | None) -> dict[str, bool]:
    if row is None:
        return dict(DEFAULT_PREFERENCES)
    return {key: bool(getattr(row, key)) for key in DEFAULT_PREFERENCES}


async def preferences(session: AsyncSession, user_id: str) -> dict[str, bool]:
    return preferences_of(await session.get(NotificationPreferences, user_id))


async def change(session: AsyncSession, user_id: str, values: Mapping[str, bool]) -> dict[str, bool]:
    """Apply `values` (any subset of the keys) on top of the stored or default preferences."""
    row = await session.get(NotificationPreferences, user_id)
    if row is None:
        row = NotificationPreferences.model_validate({"user_id": user_id, **DEFAULT_PREFERENCES})
    _apply(row, values)
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:  # created concurrently by another request: apply on top of it
        await session.rollback()
        row = await session.get(NotificationPreferences, user_id)
        if row is None:
            raise
        _apply(row, values)
        session.add(row)
        await session.commit()
    return preferences_of(row)


def _apply(row: NotificationPreferences, values: Mapping[str, bool]) -> None:
    for key, value in values.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
