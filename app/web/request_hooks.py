"""The checks before every request and the touches after every response, as one hook each.

Quart calls each registered hook through `ensure_async`, which asks
`inspect.iscoroutinefunction` of it on every request: with five hooks that was ~4.6 % of a
`GET /api/discussions/{id}` (issue 13). So the app registers one of each, which runs these in
order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from quart import Quart, Response

BeforeRequest = Callable[[], Awaitable[None]]
AfterRequest = Callable[[Response], Awaitable[Response]]


def install(app: Quart, before: Sequence[BeforeRequest], after: Sequence[AfterRequest]) -> None:
    """`before` run in order before each request (they raise to refuse it); `after` in order
    on each response, each given the previous one's."""
    before_hooks, after_hooks = tuple(before), tuple(after)

    async def before_request() -> None:
        for hook in before_hooks:
            await hook()

    async def after_request(response: Response) -> Response:
        for hook in after_hooks:
            response = await hook(response)
        return response

    app.before_request(before_request)
    app.after_request(after_request)
