"""A user's notifications and Web Push subscriptions, as REST reads and changes them.

The notification worker (app/notify/) stores notifications; this is the reader's side: list,
mark read (one or all), and the browsers' Push API subscriptions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from app.domain.models import Notification, PushSubscription, utcnow

MAX_NOTIFICATION_ID_CHARS = 32


async def notifications(session: AsyncSession, user_id: str, *, unread: bool, limit: int) -> list[Notification]:
    """Newest first."""
    query = select(Notification).where(Notification.user_id == user_id)
    if unread:
        query = query.where(col(Notification.read_at).is_(None))
    rows = await session.exec(query.order_by(col(Notification.created_at).desc(), col(Notification.id)).limit(limit))
    return list(rows.all())


async def own_notification(session: AsyncSession, user_id: str, notification_id: str) -> Notification | None:
    """The notification if it is `user_id`'s: someone else's does not exist, as far as they know."""
    if len(notification_id) > MAX_NOTIFICATION_ID_CHARS:
        return None
    notification = await session.get(Notification, notification_id)
    return notification if notification is not None and notification.user_id == user_id else None


async def mark_read(session: AsyncSession, notification: Notification) -> bool:
    """Mark it read now; False if it already was (nothing changes)."""
    if notification.read_at is not None:
        return False
    notification.read_at = utcnow()
    session.add(notification)
    await session.commit()
    return True


async def mark_all_read(session: AsyncSession, user_id: str, now: datetime) -> list[str]:
    """Mark every unread notification of the user read at `now`; returns their ids."""
    rows = await session.exec(
        select(Notification.id).where(Notification.user_id == user_id, col(Notification.read_at).is_(None))
    )
    ids = list(rows.all())
    if ids:
        await session.exec(update(Notification).where(col(Notification.id).in_(ids)).values(read_at=now))
        await session.commit()
    return ids


async def save_subscription(session: AsyncSession, user_id: str, endpoint: str, p256dh: str, auth: str) -> bool:
    """Store a browser's subscription for `user_id`; True when the endpoint was new. A known
    endpoint now belongs to this user, with these keys (the same browser signed in as someone
    else, or its keys rotated: the newest wins)."""
    for attempt in range(2):
        rows = await session.exec(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
        existing = rows.first()
        new = existing is None
        if existing is None:
            existing = PushSubscription(user_id=user_id, endpoint=endpoint, p256dh="", auth="")
        existing.user_id = user_id
        existing.p256dh = p256dh
        existing.auth = auth
        session.add(existing)
        try:
            await session.commit()
            return new
        except IntegrityError:  # the same endpoint raced in: update that one instead
            await session.rollback()
            if attempt:
                raise
    raise AssertionError("unreachable")


async def remove_subscription(session: AsyncSession, user_id: str, endpoint: str) -> None:
    await session.exec(
        delete(PushSubscription).where(
            col(PushSubscription.endpoint) == endpoint, col(PushSubscription.user_id) == user_id
        )
    )
    await session.commit()
