"""The real app in a real terminal: start it in tmux, label 20 items by keystrokes, quit, check the events."""

import shutil
import subprocess
import sys
import time
import uuid

import pytest

from labelloop.core.store.project import Project
from tests.tui_helpers import project_copy

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _capture(session):
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session, needle, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        screen = _capture(session)
        if needle in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} never appeared; screen was:\n{_capture(session)}")


def test_label_20_items_in_tmux(tmp_path):
    d = project_copy(tmp_path)
    session = f"ll-{uuid.uuid4().hex[:8]}"
    cmd = f"{sys.executable} -m labelloop.tui.cli label {d}"
    from tests.conftest import ROOT

    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c", str(ROOT), cmd], check=True
    )
    try:
        _wait_for(session, "left in queue")
        for i in range(20):
            subprocess.run(["tmux", "send-keys", "-t", session, "1" if i % 2 else "2"], check=True)
            _wait_for(session, f"done {i + 1} this session")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the app did not quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    with Project.open(d) as p:
        rows = p.store.rows(
            "SELECT labels FROM events WHERE actor <> 'seed-annotator' AND kind = 'label' "
            "AND via <> 'import' ORDER BY event_id"
        )
    assert len(rows) == 20
    assert [r[0] for r in rows] == [["spam"] if i % 2 == 0 else ["ham"] for i in range(20)]
