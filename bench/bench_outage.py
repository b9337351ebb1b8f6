"""The workstation over the socket while the server is stopped for 20 s (issue 19, point 4).

An annotator labels at a human pace (one key a second) through ``labelloop serve`` (a real server
process); the server is stopped for 20 s (SIGTERM) and started again while the keys go on. Printed:
the UI loop's largest gap between 10 ms ticks before, during and after the outage (target: never over
100 ms), the reconnecting line's count, and the decisions acknowledged against those stored (target:
every one stored once). The phase with the server up is the baseline of the same run.

    python bench/bench_outage.py
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT  # noqa: E402

OUTAGE_SECONDS = 20.0
PHASE_SECONDS = 10.0


def serve(d: Path) -> subprocess.Popen:
    from labelloop.core.api.client import SocketClient
    from labelloop.core.api.protocol import SOCKET_NAME, ApiError

    proc = subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "serve", str(d)], cwd=ROOT, stdout=subprocess.DEVNULL
    )
    for _ in range(600):
        try:
            SocketClient(d / SOCKET_NAME, reconnect_seconds=0).close()
            return proc
        except (OSError, ApiError):
            time.sleep(0.05)
    raise SystemExit("the server did not start")


def main() -> None:
    from labelloop.core.store.project import Project
    from labelloop.tui.app import LabelApp
    from tests.tui_helpers import TRUTH, build_project

    top = OUT / "outage_bench"
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(parents=True)
    d = build_project(top / "proj")
    server = serve(d)
    phases: dict[str, list[float]] = {"server up (baseline)": [], "server stopped": [], "server back": []}
    shown_lines: list[str] = []
    acked = 0

    async def run() -> None:
        nonlocal server, acked
        app = LabelApp(d)
        async with app.run_test(size=(80, 24)) as pilot:
            ticks: list[float] = []
            app.set_interval(0.01, lambda: ticks.append(time.perf_counter()))

            async def label_for(seconds: float, phase: str) -> None:
                start = len(ticks)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    item = app.ws.current()
                    if item is not None:
                        await pilot.press(app.ws.config.label_keys[TRUTH[item.item_id]])
                    await pilot.pause(1.0)
                    line = str(app.query_one("#notice").render())
                    if "reconnecting" in line:
                        shown_lines.append(line)
                phases[phase] = list(np.diff(ticks[start:]) * 1000)

            await label_for(PHASE_SECONDS, "server up (baseline)")
            server.terminate()
            server.wait()
            await label_for(OUTAGE_SECONDS, "server stopped")
            server = serve(d)
            await label_for(PHASE_SECONDS, "server back")
            while app.link.held:
                await pilot.pause(0.1)
            acked = app.ws.decisions_session

    try:
        asyncio.run(run())
    finally:
        server.terminate()
        server.wait()
    with Project.open(d) as p:
        rows = p.store.rows(
            "SELECT client_msg_id FROM event_log WHERE actor <> 'seed-annotator' AND via <> 'import' AND kind = 'label'"
        )
    stored, distinct = len(rows), len({r[0] for r in rows})
    print(f"bench_outage: server stopped {OUTAGE_SECONDS:.0f} s while labelling one key a second, 80x24, headless")
    worst = 0.0
    for name, gaps in phases.items():
        g = np.array(gaps or [0.0])
        worst = max(worst, float(g.max()))
        print(f"  {name:<22} UI tick gap max {g.max():6.1f} ms  p99 {np.percentile(g, 99):6.1f} ms  (n={len(g)})")
    base = max(phases["server up (baseline)"] or [1.0])
    print(f"  outage max gap / baseline max gap: {max(phases['server stopped'] or [0]) / base:.2f}")
    print(f"  reconnecting line seen {len(shown_lines)} times; last: {shown_lines[-1] if shown_lines else '-'}")
    print(f"  decisions acknowledged {acked}, stored {stored}, distinct message ids {distinct}")
    ok_gap = worst <= 100
    ok_once = acked == stored == distinct
    print(f"  target UI tick never blocked > 100 ms: {'met' if ok_gap else 'NOT met'} (worst {worst:.1f} ms)")
    print(f"  target every decision stored once:   {'met' if ok_once else 'NOT met'}")


if __name__ == "__main__":
    main()
