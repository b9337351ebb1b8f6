"""Fault injection for crash and failure tests.

``fault_point``: pause at a named point so a test can ``kill -9`` us there (the marker file gets our
pid; with ``LABELLOOP_FAULT_ONCE`` set only the first process to reach the point pauses).
``fault_error``: raise an error at a named point (e.g. a full disk under the event log) once
``LABELLOOP_FAULT_AFTER`` calls have passed. Both are inert unless LABELLOOP_FAULT names the point.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def fault_point(name: str) -> None:
    if os.environ.get("LABELLOOP_FAULT") != name:
        return
    marker = os.environ.get("LABELLOOP_FAULT_MARKER")
    if marker and os.environ.get("LABELLOOP_FAULT_ONCE"):
        # only the first process to get here pauses (a retried task must not pause again)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        with os.fdopen(fd, "w") as f:
            f.write(f"reached pid {os.getpid()}\n")
    elif marker:
        Path(marker).write_text(f"reached pid {os.getpid()}\n")
    time.sleep(float(os.environ.get("LABELLOOP_FAULT_SLEEP", "60")))


_calls: dict[str, int] = {}


def fault_error(name: str, error: BaseException) -> None:
    if os.environ.get("LABELLOOP_FAULT") != name:
        return
    _calls[name] = _calls.get(name, 0) + 1
    if _calls[name] > int(os.environ.get("LABELLOOP_FAULT_AFTER", "0")):
        raise error
