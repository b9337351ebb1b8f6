"""Shared helpers for the benchmarks: run a step in a child process, measure wall time and peak RSS."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from labelloop.core.util.safeio import atomic_write_text  # noqa: E402

OUT = ROOT / "bench" / "out"

WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "free prize win claim urgent txt reply stop offer cash"
).split()


def run_child(code: str, env: dict | None = None) -> tuple[float, float, str]:
    """Run python code in a fresh process; returns (wall seconds, peak RSS in MiB, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        text=True,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}):\n{err}")
    return wall, usage.ru_maxrss / 1024, out


def synthetic_csv(path: Path, n: int, *, labelled: bool, seed: int = 0) -> Path:
    """n rows of about 100 characters of text; labels spam/ham when labelled."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = ["id,text,label\n" if labelled else "id,text\n"]
    for i in range(n):
        text = " ".join(rng.choices(WORDS, k=22))[:100]
        if labelled:
            lines.append(f"s{i},{text},{'spam' if ('free' in text or 'win' in text) else 'ham'}\n")
        else:
            lines.append(f"s{i},{text}\n")
    atomic_write_text(path, "".join(lines))
    return path
