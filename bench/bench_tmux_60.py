"""60 items at a human pace through the real app in a real terminal (tmux, 80x24), with retrains
landing every 15 decisions (issue 21).

Every screen is captured (one capture after each key and three more while waiting); each is checked:
- the label bar is whole (its keys and labels on one line);
- notices (a retrain's model line, its warnings, "Retraining…") appear only in the notice line, the
  line above the label bar, never over the item text, the why pane or the label bar;
- the item text's box is whole (its top and bottom borders).
Printed: screens captured, screens with a problem (target 0), retrains seen, decisions stored.

    python bench/bench_tmux_60.py [--items 60] [--pace 0.8]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, tmux_screen, tmux_start  # noqa: E402

NOTICE_RE = re.compile(r"Retraining \(|Model v\d+: test accuracy|New batch of|Undone:|No item on screen yet")


def capture(session: str) -> list[str]:
    return tmux_screen(session).splitlines()


def problems(lines: list[str]) -> list[str]:
    """What is wrong with one 80x24 screen of the labelling app."""
    found = []
    bar = [i for i, ln in enumerate(lines) if re.search(r"\b1\s+ham\s+2\s+spam\b", ln)]
    if not bar:
        return ["no whole label bar"]
    b = bar[-1]
    notice_line = b - 1
    for i, ln in enumerate(lines):
        if i != notice_line and NOTICE_RE.search(ln):
            found.append(f"a notice on line {i + 1} (not the notice line {notice_line + 1}): {ln.strip()[:60]}")
    if not any("╭" in ln for ln in lines[:b]) or not any("╰" in ln for ln in lines[:b]):
        found.append("the item text's box is not whole")
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=60)
    ap.add_argument("--pace", type=float, default=0.8, help="seconds between keys (a person reading)")
    args = ap.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is not installed: skipped")
        return
    from labelloop.core.store.project import Project
    from tests.tui_helpers import TRUTH, build_project

    top = OUT / "tmux60"
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(parents=True)
    d = build_project(top / "proj", cfg_edits=(("retrain_every = 0", "retrain_every = 15"),))
    session = f"ll60-{uuid.uuid4().hex[:6]}"
    cmd = f"{sys.executable} -m labelloop.tui.cli label {d}"
    tmux_start(session, cmd)
    screens, bad, versions, noticed = 0, [], set(), 0
    try:
        deadline = time.time() + 60
        while not any("left in queue" in ln for ln in capture(session)):
            if time.time() > deadline:
                raise SystemExit("the app did not start:\n" + "\n".join(capture(session)))
            time.sleep(0.2)
        done = 0
        while done < args.items:
            lines = capture(session)
            ids = [i for ln in lines for i in re.findall(r"\bid (\S+)", ln) if i in TRUTH]
            if not ids:  # between batches: wait for the next item
                time.sleep(0.3)
                continue
            key = "1" if TRUTH[ids[-1]] == "ham" else "2"
            subprocess.run(["tmux", "send-keys", "-t", session, key], check=True)
            done += 1
            for _ in range(4):
                time.sleep(args.pace / 4)
                lines = capture(session)
                screens += 1
                versions.update(re.findall(r"model v(\d+)", " ".join(lines)))
                bar = [i for i, ln in enumerate(lines) if re.search(r"\b1\s+ham\s+2\s+spam\b", ln)]
                noticed += bool(bar) and bool(NOTICE_RE.search(lines[bar[-1] - 1]))
                for p in problems(lines):
                    bad.append((done, p, "\n".join(lines)))
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        time.sleep(2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    with Project.open(d) as p:
        stored = p.store.scalar(
            "SELECT count(*) FROM event_log WHERE actor <> 'seed-annotator' AND kind = 'label' AND via <> 'import'"
        )
    print(f"bench_tmux_60: {args.items} items at one key every {args.pace:.1f} s, 80x24, retrain every 15")
    print(f"  screens captured {screens}; screens with a problem {len(bad)} (target 0)")
    print(f"  screens with a notice showing, in the notice line: {noticed}")
    print(f"  model versions seen on screen: {', '.join(sorted(versions, key=int)) or '-'}")
    print(f"  decisions stored {stored} of {args.items}")
    for n, p, screen in bad[:3]:
        print(f"  after item {n}: {p}\n{screen}\n")


if __name__ == "__main__":
    main()
