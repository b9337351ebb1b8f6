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


def _serve(d):
    import os

    from tests.test_serve import _server_process

    proc = _server_process(d)
    assert os.path.exists(d / "run" / "labelloop.sock")
    return proc


def _stop(proc):
    proc.terminate()
    proc.wait(timeout=60)


def _seconds_shown(screen: str) -> int | None:
    import re

    m = re.search(r"reconnecting… \((\d+) s\)", screen)
    return int(m.group(1)) if m else None


def test_the_server_stops_for_20_s_while_an_annotator_labels_in_tmux(tmp_path):
    """Team mode in a real terminal: the server stops for 20 s in the middle of a session. The screen
    keeps redrawing (its reconnecting counter moves), the decision made during the outage is held and
    stored once when the server is back, and labelling goes on."""
    from tests.tui_helpers import TRUTH

    d = project_copy(tmp_path)
    server = _serve(d)
    session = f"ll-{uuid.uuid4().hex[:8]}"
    from tests.conftest import ROOT

    cmd = f"{sys.executable} -m labelloop.tui.cli label {d}"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c", str(ROOT), cmd], check=True
    )

    def press(key):
        subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)

    def key_for_screen():
        import re

        screen = _capture(session)
        shown = [i for i in re.findall(r"\bid (\S+)", screen) if i in TRUTH]  # the meta line, under the text
        assert shown, screen
        return "1" if TRUTH[shown[-1]] == "ham" else "2"

    try:
        _wait_for(session, "left in queue")
        for i in range(3):
            press(key_for_screen())
            _wait_for(session, f"done {i + 1} this session")
        _stop(server)
        press(key_for_screen())  # decided while the server is away: held
        screen = _wait_for(session, "1 decision held", timeout=15)
        shown = [_seconds_shown(screen)]
        t0 = time.time()
        while time.time() - t0 < 20:
            time.sleep(2)
            shown.append(_seconds_shown(_capture(session)))
        assert None not in shown and shown == sorted(shown) and shown[-1] - shown[0] >= 15, shown
        server = _serve(d)
        _wait_for(session, "done 4 this session", timeout=30)
        deadline = time.time() + 5
        while "reconnecting" in _capture(session):
            assert time.time() < deadline, _capture(session)
            time.sleep(0.2)
        for i in range(4, 7):
            press(key_for_screen())
            _wait_for(session, f"done {i + 1} this session")
        press("q")
        deadline = time.time() + 30
        while subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0:
            assert time.time() < deadline, "the app did not quit on q"
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        _stop(server)
    with Project.open(d) as p:
        rows = p.store.rows(
            "SELECT item_id, client_msg_id FROM event_log WHERE actor <> 'seed-annotator' AND kind = 'label' "
            "AND via <> 'import' ORDER BY event_id"
        )
    assert len(rows) == 7 and len({r[0] for r in rows}) == 7 and len({r[1] for r in rows}) == 7
