"""Structured logs: one JSON object per line, with credentials scrubbed from every message."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

# A bearer header, a parley_token cookie, or anything shaped like a JWT.
_SECRET = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+|(parley_token=)[^;\s]+|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
)


def scrub(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2) or "") + "[redacted]", text)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The formatted second, kept (one tuple: threads that log see a consistent pair):
        # strftime per line was a tenth of an access line's cost.
        self._second: tuple[int, str] = (-1, "")

    def _timestamp(self, record: logging.LogRecord) -> str:
        second, text = self._second
        if int(record.created) != second:
            text = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
            self._second = (int(record.created), text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        # Structured fields (`log.info(..., extra={"fields": {...}})`): the access and audit logs.
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if key not in entry})
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic names each of its plugins at INFO whenever it runs: noise at every first start.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.NOTSET
    logging.getLogger("alembic.runtime.plugins").setLevel(quiet)
    logging.Formatter.converter = __import__("time").gmtime
