"""Text every database stores as it was given (issue 11, item 6).

PostgreSQL refuses NUL in text columns while SQLite keeps it, and an unpaired surrogate (a JSON
escape such as `"\\ud800"` decodes to one) cannot be encoded as UTF-8 by either driver: both
reached the database as a 500. Such text is refused where it comes in, the same on both.
"""

from __future__ import annotations

from typing import Any


def storable(text: str) -> bool:
    """False for text a database would refuse or change: NUL, or an unpaired surrogate."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unstorable_text(value: Any, where: str = "body") -> str | None:
    """Where in a decoded JSON value (keys too) the first unstorable text is, or None.
    Iterative: the value may be nested nearly as deep as the JSON decoder allows."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not storable(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if not storable(key):
                    return path
                stack.append((f"{path}.{key}"[:200], child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]"[:200], child) for index, child in enumerate(item))
    return None
