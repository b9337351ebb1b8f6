"""Is the service's memory flat under a team's load? (issue: team mode part 1, "server memory flat")

The project service in this process, 20 actors deciding as fast as a 0.4 s round allows (about 35
decisions/s), retraining every 25 labels in its training process, for 90 s. Every 10 s: the
process's RSS, the Python heap (tracemalloc) and DuckDB's own accounting (duckdb_memory()). A leak
shows as a heap that climbs; data growth shows in DuckDB's figure.

    python bench/bench_service_memory.py
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT  # noqa: E402
from bench.bench_team import build, rss_mib  # noqa: E402


def main(seconds: float = 90) -> None:
    from labelloop.core.api.client import LocalClient
    from labelloop.core.api.service import Service

    top = OUT / "service_memory"
    shutil.rmtree(top, ignore_errors=True)
    d, truth = build(top / "x" / "proj")
    svc = Service(d, compute="process", owner="admin")
    clients = [LocalClient(svc, f"a{i}") for i in range(20)]
    items = {c: c.call("next")["item"] for c in clients}
    tracemalloc.start()
    t0, last, n = time.time(), 0.0, 0
    rows = []
    while time.time() - t0 < seconds:
        for c in clients:
            it = items[c]
            if it is None:
                items[c] = c.call("next")["item"]
                continue
            a = c.call(
                "decide", item_id=it["item_id"], action="label", labels=[truth[it["item_id"]]], msg_id=uuid.uuid4().hex
            )
            items[c] = a["item"]
            n += 1
        time.sleep(0.4)
        if time.time() - last > 10:
            last = time.time()
            heap = tracemalloc.get_traced_memory()[0] / 2**20
            duck = svc.store.scalar("SELECT sum(memory_usage_bytes) FROM duckdb_memory()") / 2**20
            models = svc.store.scalar("SELECT count(*) FROM models")
            rows.append((time.time() - t0, n, models, rss_mib(os.getpid()), heap, duck))
            print(
                f"{rows[-1][0]:5.0f} s  decisions {n:5d}  models {models:3d}  RSS {rows[-1][3]:.0f} MiB  "
                f"Python heap {heap:.1f} MiB  DuckDB {duck:.1f} MiB",
                flush=True,
            )
    svc.close()
    if len(rows) > 2:
        print(
            f"after warm-up: RSS {rows[1][3]:.0f} -> {rows[-1][3]:.0f} MiB; Python heap max {max(r[4] for r in rows):.1f} "
            f"MiB (last {rows[-1][4]:.1f}); DuckDB {rows[1][5]:.1f} -> {rows[-1][5]:.1f} MiB"
        )


if __name__ == "__main__":
    main()
