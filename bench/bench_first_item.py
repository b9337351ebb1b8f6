"""From the shell to the first item on screen, on a fresh project (issue 21): ``labelloop label DIR``
in tmux at 80x24, on a project just created and imported (4,000 items of the bundled SMS data, no
batch yet), five times; and reopening the same project once its first batch exists. Target: median
of the fresh start <= 2 s.

    python bench/bench_first_item.py [--items 4000] [--runs 5]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT, tmux_screen, tmux_start  # noqa: E402
from tests.conftest import write_csv  # noqa: E402


def first_item_seconds(d: Path) -> float:
    session = f"llfirst-{uuid.uuid4().hex[:6]}"
    cmd = f"{sys.executable} -m labelloop.tui.cli label {d}"
    t0 = time.perf_counter()
    tmux_start(session, cmd)
    try:
        while True:
            screen = tmux_screen(session)
            if "\nid " in screen or screen.startswith("id "):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > 120:
                raise SystemExit("no item after 120 s:\n" + screen)
            time.sleep(0.02)
    finally:
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], capture_output=True)
        time.sleep(1.0)
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed: skipped")
        return
    from labelloop.core.store.imports import import_file
    from labelloop.core.store.project import Project, init_project

    top = OUT / "first_item"
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(parents=True)
    rows = list(csv.DictReader(open(ROOT / "sample_data" / "sms_spam.csv", encoding="utf-8")))
    rows = [r for r in rows if r["split"] == "pool"][: args.items]
    src = write_csv(top / "items.csv", ["id", "text"], [[r["id"], r["text"]] for r in rows])
    fresh = []
    for k in range(args.runs):
        d = init_project(top / f"p{k}", ["ham", "spam"])
        with Project.open(d) as p:
            import_file(p, src, id_col="id")
        fresh.append(first_item_seconds(d))
    again = first_item_seconds(top / "p0")
    med = statistics.median(fresh)
    print(f"bench_first_item: fresh {len(rows):,}-item project, labelloop label in tmux 80x24, {args.runs} runs")
    print(f"  fresh project: first item after {', '.join(f'{x:.2f}' for x in fresh)} s; median {med:.2f} s")
    print(f"  reopening (first batch exists): {again:.2f} s (baseline, same run)")
    print(f"  target median <= 2 s: {'met' if med <= 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
