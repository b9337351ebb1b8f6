"""Team mode under load and under faults (issue: team mode part 1).

Load: ``labelloop serve`` (training in its separate process, as deployed) with 20 simulated
annotators and 2 reviewers on the Unix socket for 60 s. Annotators think 0.3-1.5 s per item (faster
than people) and label with the true label; reviewers ask for status, metrics and the upcoming items
every 2 s; a hostile client sends garbage, an oversized line and unknown ops. Printed: decisions
acknowledged vs stored (from the events), overlap violations (an item above its needed count, an
annotator twice on one item), decide latency p50/p99/max against the in-process decide measured in
the same run, the server's memory over time, retrains during the run.

Fault: the same load; at 15 s the server is killed with SIGKILL and started again; clients
reconnect and resend (decisions carry message ids). Printed: acknowledged decisions missing after
the restart (must be 0), duplicates stored, how long clients waited, whether every open item can
still be handed out (the dead sessions' leases returned), and a client killed mid-request.

    python bench/bench_team.py [--seconds 60] [--annotators 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT  # noqa: E402

SAMPLE = ROOT / "sample_data" / "sms_spam.csv"


def build(dst: Path) -> tuple[Path, dict]:
    import csv

    from labelloop.core.importer import import_file
    from labelloop.core.loop import train_and_queue
    from labelloop.core.project import Project, init_project
    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir(parents=True)
    d = init_project(dst, ["ham", "spam"], name="team-bench")
    cfg = d / "labelloop.toml"
    # init's defaults, except: a batch a team of 20 does not empty between two retrains, and more overlap
    cfg.write_text(cfg.read_text().replace("batch_size = 50", "batch_size = 200")
                   .replace("overlap_share = 0.10", "overlap_share = 0.20"))
    rows = list(csv.DictReader(open(SAMPLE, encoding="utf-8")))
    truth = {r["id"]: r["label"] for r in rows}
    with Project.open(d) as p:
        import_file(p, SAMPLE, id_col="id", split_col="split", label_col="label", prelabel_pool=False, dedupe=True)
        train_and_queue(p, seed=0)
    return d, truth


class Wire:
    """The protocol with nothing but the standard library (what an annotator's process speaks)."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = None
        self.f = None
        self.reconnects = 0

    def connect(self, deadline: float) -> None:
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(30)
                s.connect(self.path)
                self.sock, self.f = s, s.makefile("rb")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def call(self, op: str, **args) -> tuple[dict, float]:
        line = (json.dumps({"id": 1, "op": op, "args": args}) + "\n").encode()
        waited_since = None
        while True:
            try:
                if self.sock is None:
                    self.connect(time.monotonic() + 60)
                t = time.perf_counter()
                self.sock.sendall(line)
                raw = self.f.readline()
                if not raw:
                    raise ConnectionResetError()
                dt = (time.perf_counter() - t) * 1000
                ans = json.loads(raw)
                if not ans["ok"]:
                    raise RuntimeError(f"{ans['error']['code']}: {ans['error']['message']}")
                return ans["data"], dt
            except (OSError, ConnectionError):
                self.sock = None
                self.reconnects += 1
                waited_since = waited_since or time.monotonic()
                if time.monotonic() - waited_since > 60:
                    raise
                time.sleep(0.1)


class Annotator(threading.Thread):
    def __init__(self, name: str, sock: Path, truth: dict, stop: threading.Event, rng: random.Random):
        super().__init__(daemon=True, name=name)
        self.wire, self.truth, self.stop, self.rng = Wire(sock), truth, stop, rng
        self.acked: list[tuple[str, str, int]] = []   # (msg_id, item_id, event_id)
        self.latencies: list[float] = []
        self.waits = 0
        self.errors: list[str] = []

    def run(self) -> None:
        try:
            item = self.wire.call("next")[0]["item"]
            while not self.stop.is_set():
                if item is None:
                    self.waits += 1
                    time.sleep(0.5)
                    item = self.wire.call("next")[0]["item"]
                    continue
                time.sleep(self.rng.uniform(0.3, 1.5))
                msg = uuid.uuid4().hex
                try:
                    ans, dt = self.wire.call("decide", item_id=item["item_id"], action="label",
                                             labels=[self.truth[item["item_id"]]], msg_id=msg)
                except RuntimeError as exc:   # e.g. not_leased after a restart: ask again
                    self.errors.append(str(exc)[:80])
                    item = self.wire.call("next")[0]["item"]
                    continue
                self.latencies.append(dt)
                self.acked.append((msg, item["item_id"], ans["event_id"]))
                item = ans["item"]
        except Exception as exc:  # reported, not hidden
            self.errors.append(f"stopped: {type(exc).__name__}: {exc}"[:120])


class Reviewer(threading.Thread):
    def __init__(self, name: str, sock: Path, stop: threading.Event):
        super().__init__(daemon=True, name=name)
        self.wire, self.stop = Wire(sock), stop
        self.latencies: dict[str, list[float]] = {"status": [], "metrics": [], "next_items": []}
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                for op, args in (("status", {}), ("metrics", {}), ("next_items", {"n": 20})):
                    self.latencies[op].append(self.wire.call(op, **args)[1])
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:120])
            self.stop.wait(2.0)


def hostile(sock: Path, stop: threading.Event, report: dict) -> None:
    """Garbage, an oversized line, unknown ops and a client that vanishes mid-request, every 5 s."""
    n = 0
    while not stop.wait(5.0):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock))
            s.sendall(b"garbage\n{\"id\": 1, \"op\": \"rm_rf\"}\n")
            s.sendall(b"x" * (1 << 20 + 1))
            s.close()
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock))
            s.sendall(b'{"id": 2, "op": "dec')   # and gone
            s.close()
            n += 1
        except OSError:
            pass
    report["hostile_rounds"] = n


def rss_mib(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_server(d: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "labelloop.tui.cli", "serve", str(d)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    w = Wire(d / "labelloop.sock")
    w.connect(time.monotonic() + 60)
    w.sock.close()
    return proc


def in_process_baseline(d: Path, truth: dict, n: int = 200) -> list[float]:
    """The same decide through the in-process transport, on a copy of the project (same run)."""
    from labelloop.core.client import LocalClient
    from labelloop.core.service import Service
    copy = d.parent / "baseline"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(d, copy)
    svc = Service(copy, compute="thread", owner="bench")
    c = LocalClient(svc, "bench")
    out = []
    item = c.call("next")["item"]
    for _ in range(n):
        if item is None:
            break
        t = time.perf_counter()
        ans = c.call("decide", item_id=item["item_id"], action="label", labels=[truth[item["item_id"]]],
                     msg_id=uuid.uuid4().hex)
        out.append((time.perf_counter() - t) * 1000)
        item = ans["item"]
    svc.close()
    shutil.rmtree(copy, ignore_errors=True)
    return out


def verify(d: Path, acked: list[tuple[str, str, int]], annotators: list[str] | None = None) -> dict:
    from labelloop.core.assign import overlap_need
    from labelloop.core.project import Project
    with Project.open(d) as p:
        cfg = p.config
        rows = p.store.rows("""SELECT client_msg_id, item_id, actor FROM event_log
                               WHERE kind = 'label' AND client_msg_id IS NOT NULL""")
        per_item: dict[str, list[str]] = {}
        for _m, item_id, actor in rows:
            per_item.setdefault(item_id, []).append(actor)
        stored_msgs = [r[0] for r in rows]
    acked_msgs = {m for m, _i, _e in acked}
    over = [i for i, a in per_item.items() if len(a) > overlap_need(i, cfg.overlap_share, cfg.annotators_per_item)]
    twice = [i for i, a in per_item.items() if len(a) != len(set(a))]
    return {"acknowledged": len(acked_msgs), "stored": len(stored_msgs),
            "acknowledged_missing": len(acked_msgs - set(stored_msgs)),
            "stored_twice": len(stored_msgs) - len(set(stored_msgs)),
            "items_over_needed_count": len(over), "annotator_twice_on_an_item": len(twice),
            "items_with_two_labels": sum(len(a) >= 2 for a in per_item.values())}


def run_load(d: Path, truth: dict, seconds: float, n_annotators: int, *, kill_at: float | None = None) -> dict:
    sock = d / "labelloop.sock"
    proc = start_server(d)
    stop = threading.Event()
    rng = random.Random(7)
    ann = [Annotator(f"a{i}", sock, truth, stop, random.Random(rng.random())) for i in range(n_annotators)]
    rev = [Reviewer(f"r{i}", sock, stop) for i in range(2)]
    report: dict = {}
    h = threading.Thread(target=hostile, args=(sock, stop, report), daemon=True)
    for t in ann + rev + [h]:
        t.start()
    t0 = time.monotonic()
    rss = []
    restarted = None
    killed = False
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        r = rss_mib(proc.pid)
        if r is not None:
            rss.append((round(time.monotonic() - t0), round(r, 1)))
        if kill_at is not None and not killed and time.monotonic() - t0 >= kill_at:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
            k = time.monotonic()
            proc = start_server(d)
            restarted = time.monotonic() - k
    stop.set()
    for t in ann + rev:
        t.join(timeout=90)
    h.join(timeout=10)
    # every open item can still be handed out: a fresh client drains what is left of the batch
    w = Wire(sock)
    left = w.call("status")[0]["team"]["open_items"]
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    acked = [a for t in ann for a in t.acked]
    lat = np.array([x for t in ann for x in t.latencies])
    out = {"seconds": seconds, "annotators": n_annotators, "reviewers": len(rev),
           "decide_ms": {"n": int(lat.size), "p50": round(float(np.percentile(lat, 50)), 1),
                         "p99": round(float(np.percentile(lat, 99)), 1), "max": round(float(lat.max()), 1)},
           "reviewer_ms_p99": {op: round(float(np.percentile([x for r in rev for x in r.latencies[op]], 99)), 1)
                               for op in ("status", "metrics", "next_items")},
           "empty_queue_waits": sum(t.waits for t in ann), "reconnects": sum(t.wire.reconnects for t in ann),
           "client_errors": sorted({e for t in ann + rev for e in t.errors})[:8],
           "server_rss_mib": rss, "open_items_at_end": left, **report, **verify(d, acked)}
    if kill_at is not None:
        out["killed_at_s"], out["restart_s"] = kill_at, round(restarted or -1, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--skip-fault", action="store_true")
    args = ap.parse_args()
    d, truth = build(OUT / "team_bench" / "proj")
    base = np.array(in_process_baseline(d, truth))
    print(f"baseline (in-process decide, same project, same run): p50 {np.percentile(base, 50):.1f} ms, "
          f"p99 {np.percentile(base, 99):.1f} ms over {base.size}")
    load = run_load(d, truth, args.seconds, args.annotators)
    from labelloop.core.project import Project
    with Project.open(d) as p:
        load["retrains"] = p.store.scalar("SELECT count(*) FROM models") - 1
    print("load:", json.dumps(load, indent=1))
    rss = [r for _t, r in load["server_rss_mib"]]
    if rss:
        half = len(rss) // 2
        print(f"server RSS: first half max {max(rss[:half] or rss):.0f} MiB, second half max {max(rss[half:]):.0f} MiB")
    print(f"decide p99 over the socket {load['decide_ms']['p99']} ms = "
          f"{load['decide_ms']['p99'] / max(np.percentile(base, 99), 1e-3):.1f}x the in-process p99 (target <= 100 ms)")
    if not args.skip_fault:
        d2, _ = build(OUT / "team_bench_fault" / "proj")
        fault = run_load(d2, truth, max(30.0, args.seconds / 2), args.annotators, kill_at=15)
        print("fault:", json.dumps(fault, indent=1))


if __name__ == "__main__":
    main()
