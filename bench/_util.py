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


def bare_split_tfidf(path: Path, split_col: str = "split"):
    """What a plain scikit-learn loop starts from: the file's test split held out, pool rows whose text
    is a test text dropped (as simulate drops them), TF-IDF fitted on the pool. Returns
    (X_pool, X_test, y_pool, y_test, classes)."""
    import numpy as np

    from labelloop.core.engine.features import TextFeaturizer
    from labelloop.core.loop.simulate import read_labelled

    texts, labels, splits = read_labelled(path, "text", "label", split_col)
    y = np.array(labels, dtype=object)
    test = np.array([s == "test" for s in splits])
    pool, tst = np.flatnonzero(~test), np.flatnonzero(test)
    test_texts = {texts[i] for i in tst}
    pool = np.array([i for i in pool if texts[i] not in test_texts])
    X = TextFeaturizer("tfidf").fit([texts[i] for i in pool]).transform_text(texts)
    return X[pool], X[tst], y[pool], y[tst], sorted(set(labels))


def tmux_start(session: str, command: str, width: int = 80, height: int = 24) -> None:
    """``command`` in a detached tmux session of ``width`` x ``height``, from the repository root."""
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), "-c", str(ROOT), command],
        check=True,
    )


def tmux_screen(session: str) -> str:
    """What the session's pane shows now, as text."""
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
