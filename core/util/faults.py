"""Fault injection for crash and failure tests.

``fault_point``: pause at a named point so a test can ``kill -9`` us there.
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
    if marker:
        Path(marker).write_text("reached")
    time.sleep(float(os.environ.get("LABELLOOP_FAULT_SLEEP", "60")))


_calls: dict[str, int] = {}


def fault_error(name: str, error: BaseException) -> None:
    if os.environ.get("LABELLOOP_FAULT") != name:
        return
    _calls[name] = _calls.get(name, 0) + 1
    if _calls[name] > int(os.environ.get("LABELLOOP_FAULT_AFTER", "0")):
        raise error
