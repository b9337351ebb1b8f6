"""Snapshots of the main screens at 80x24 and 120x40, built from the same app the CLI opens.

Update after an intended change with: pytest tests/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest

from labelloop.tui.app import LabelApp
from tests.tui_helpers import project_copy

SIZES = [(80, 24), (120, 40)]


def _app(tmp_path):
    return LabelApp(project_copy(tmp_path), actor="snapshot")


async def _metrics_ready(pilot):
    for _ in range(200):
        await pilot.pause(0.1)
        text = str(pilot.app.screen.query_one("#numbers").render())
        if "computing" not in text:
            break
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_label_screen(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_correction_screen(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path), terminal_size=size, press=["x"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_screen(snap_compare, tmp_path, size):
    assert snap_compare(_app(tmp_path), terminal_size=size, press=["question_mark"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_metrics_screen(snap_compare, tmp_path, size):
    async def run_before(pilot):
        await pilot.press("m")
        await _metrics_ready(pilot)

    assert snap_compare(_app(tmp_path), terminal_size=size, run_before=run_before)
