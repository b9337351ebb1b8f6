"""Fault injection for crash tests: pause at a named point so a test can ``kill -9`` us there.

Inert unless the environment variable LABELLOOP_FAULT names the point.
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
