"""Open a `labelloop report` page in headless Chromium and save a screenshot (issue: is AL working).

Chromium is installed from the distribution's packages when missing (apt-get, as root). The page
must render offline: Chromium runs with networking disabled through a proxy that does not exist.

    python bench/bench_report_screenshot.py [REPORT_HTML] [--out PNG]

Without REPORT_HTML it uses bench/out/live_bench/live_report/report.html (bench/bench_live.py).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT  # noqa: E402


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if shutil.which("apt-get"):
        print("installing chromium from the distribution's packages ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"],
            check=True,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        path = shutil.which("chromium")
        if path:
            return path
    raise SystemExit("no Chromium and no apt-get to install it")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("page", nargs="?", default=str(OUT / "live_bench" / "live_report" / "report.html"))
    ap.add_argument("--out", default=str(OUT / "report_screenshot.png"))
    args = ap.parse_args()
    page = Path(args.page).resolve()
    if not page.exists():
        raise SystemExit(f"{page} does not exist: run bench/bench_live.py first (or give a report page)")
    exe = chromium()
    out = Path(args.out).resolve()
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",  # no network for the page
        f"--screenshot={out}",
        "--window-size=1100,4200",
        page.as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not out.exists():
        raise SystemExit(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")
    print(f"{exe}: {page.name} -> {out} ({out.stat().st_size:,} bytes)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    print(version)


if __name__ == "__main__":
    main()
