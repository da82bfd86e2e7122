"""What every transport does before opening a session: authenticate and authorize."""

from __future__ import annotations

from ..api.common import caller
from ..errors import InvalidField
from ..services import Services, services
from ..session import MAX_DISCUSSIONS_PER_CONNECTION, StreamSession


async def authorized_session(discussion_ids: list[str]) -> tuple[Services, StreamSession]:
    """A session for the caller on these discussions: 401 without a valid token, 404 for a
    discussion that does not exist or that the caller may not read (NFR-014)."""
    identity = await caller()
    if len(discussion_ids) > MAX_DISCUSSIONS_PER_CONNECTION:
        raise InvalidField(f"discussion: at most {MAX_DISCUSSIONS_PER_CONNECTION} per connection")
    parley = services()
    for discussion_id in dict.fromkeys(discussion_ids):
        await parley.read_access.check(parley.db, identity, discussion_id)
    return parley, StreamSession(parley, identity, discussion_ids)
