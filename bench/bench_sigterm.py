"""How long SIGTERM takes to stop ``labelloop serve`` during a retrain on a large pool (issue 21: it
took about 35 s on 400,000 items, while the server built the features itself).

A project of N synthetic items (default 400,000) with 40 seed labels and no feature cache; the
server is started, ``labelloop train`` asks for a retrain, and SIGTERM is sent once the training
process is building the features (the items snapshot exists) plus a few seconds. Baseline in the
same run: SIGTERM to the same server idle.

    python bench/bench_sigterm.py [--items 400000] [--after 5]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT, synthetic_csv  # noqa: E402
from bench.bench_team import _wait_socket  # noqa: E402


def build(d: Path, n: int) -> Path:
    from labelloop.core.loop.batch import blind_round
    from labelloop.core.store.imports import import_file
    from labelloop.core.store.project import Project, init_project

    src = synthetic_csv(OUT / "sigterm" / f"items_{n}.csv", n, labelled=False)
    d = init_project(d, ["ham", "spam"])
    with Project.open(d) as p:
        import_file(p, src, id_col="id")
        blind_round(p, seed=0)
        queued = p.store.open_queue(40)
        for k, it in enumerate(queued):
            p.store.append_event(
                it["item_id"],
                "label",
                "seed",
                via="key",
                labels=["spam" if k % 3 == 0 else "ham"],
                batch_id=it["batch_id"],
                strategy=it["strategy"],
                audit=it["audit"],
            )
    return d


def stop_seconds(d: Path, during_retrain: bool, after: float) -> tuple[float, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "serve", str(d)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    train = None
    try:
        _wait_socket(d / "run" / "labelloop.sock", 120)
        what = "idle"
        if during_retrain:
            for f in (d / "cache").glob("features*"):
                f.unlink()
            train = subprocess.Popen(
                [sys.executable, "-m", "labelloop.tui.cli", "train", str(d)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            t0 = time.monotonic()
            while not list((d / "cache").glob(".snapshot-*")):
                if time.monotonic() - t0 > 300:
                    raise SystemExit("the retrain never started building features")
                time.sleep(0.05)
            time.sleep(after)
            what = f"retrain building features for {time.monotonic() - t0:.1f} s"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
        return time.monotonic() - t0, what
    finally:
        for p in (proc, train):
            if p is not None and p.poll() is None:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=400_000)
    ap.add_argument("--after", type=float, default=5.0)
    args = ap.parse_args()
    top = OUT / "sigterm"
    shutil.rmtree(top / "proj", ignore_errors=True)
    t0 = time.perf_counter()
    d = build(top / "proj", args.items)
    print(f"bench_sigterm: {args.items:,} items, 40 seed labels (project built in {time.perf_counter() - t0:.0f} s)")
    idle, _ = stop_seconds(d, False, args.after)
    busy, what = stop_seconds(d, True, args.after)
    print(f"  SIGTERM, idle server: stopped in {idle:.2f} s (baseline, same run)")
    print(f"  SIGTERM, {what}: stopped in {busy:.2f} s ({busy / idle:.1f}x idle)")


if __name__ == "__main__":
    main()
