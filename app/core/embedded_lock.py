"""The embedded event log's guard: one process per data directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from app.settings import StartupError


class EmbeddedLogBusy(StartupError):
    pass


class EmbeddedLock:
    """Refuses a second process on the same data directory while the log is embedded: two
    processes would each hold half of the events and silently split every discussion."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "embedded-log.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            process = f"process {holder}" if holder.isdigit() else "process"
            raise EmbeddedLogBusy(
                f"PARLEY_DATA_DIR={self._path.parent}: another Parley {process} already serves the embedded "
                "event log from this directory.\nStop it, give this server its own PARLEY_DATA_DIR (and PORT), "
                "or set REDIS_URL to share one log between processes."
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
