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

Hostile mix (``--hostile``, root only: the attacker is a real OS user in the team's group, not in the
project's roles): surrogate ids, 2,000 idle connections, descriptors sent without requests, a
refused-ping loop, and a gzip bomb imported by the admin, all while the team labels. Printed: what
each attack got, the denied events stored, whether the server still accepts at the end, and the
decide latency under it.

    python bench/bench_team.py [--seconds 60] [--annotators 20] [--hostile]
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
from bench._util import ROOT  # noqa: E402

SAMPLE = ROOT / "sample_data" / "sms_spam.csv"


def build(dst: Path) -> tuple[Path, dict]:
    import csv

    from labelloop.core.loop.al_round import train_and_queue
    from labelloop.core.store.imports import import_file
    from labelloop.core.store.project import Project, init_project

    shutil.rmtree(dst.parent, ignore_errors=True)
    dst.parent.mkdir(parents=True)
    d = init_project(dst, ["ham", "spam"], name="team-bench")
    cfg = d / "labelloop.toml"
    # init's defaults, except: a batch a team of 20 does not empty between two retrains, and more overlap
    cfg.write_text(
        cfg.read_text()
        .replace("batch_size = 50", "batch_size = 200")
        .replace("overlap_share = 0.1", "overlap_share = 0.2")
    )
    rows = list(csv.DictReader(open(SAMPLE, encoding="utf-8")))
    truth = {r["id"]: r["label"] for r in rows}
    with Project.open(d) as p:
        import_file(p, SAMPLE, id_col="id", split_col="split", label_col="label", prelabel_pool=False, dedupe=True)
        train_and_queue(p, seed=0)
    return d, truth


def hostile(sock: Path, stop: threading.Event, report: dict) -> None:
    """Garbage, an unknown op, an oversized line and a client that vanishes mid-request, every 5 s."""
    n = 0
    while not stop.wait(5.0):
        for payload in (b'garbage\n{"id": 1, "op": "rm_rf"}\n', b"x" * ((1 << 20) + 100), b'{"id": 2, "op": "dec'):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(5)
                s.connect(str(sock))
                s.sendall(payload)
                s.close()
            except OSError:
                pass
        n += 1
    report["hostile_rounds"] = n


def rss_mib(pid: int) -> float | None:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _wait_socket(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            s.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_server(d: Path, tcp: str | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelloop.tui.cli",
            "serve",
            str(d),
            *(["--tcp", tcp] if tcp else []),
            *(["--group", GROUP] if can_make_users() else []),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_socket(d / "run" / "labelloop.sock")
    return proc


# -- the team: one OS user per person when we may create users (root), else TCP tokens ----------------
GROUP = "llbench"


def can_make_users() -> bool:
    return (
        os.geteuid() == 0
        and all(shutil.which(c) for c in ("useradd", "groupadd", "runuser"))
        and os.path.exists("/usr/bin/python3")
    )


def make_users(n: int) -> list[str]:
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    users = [f"llb{i:02d}" for i in range(n)]
    for u in users:
        if subprocess.run(["id", u], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-M", "-G", GROUP, "-s", "/bin/sh", u], check=True)
    return users


def team_folder(name: str) -> Path:
    """A project folder the team can reach: mode 2770, group llbench, under a 0755 folder."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix=f"labelloop-{name}-"))
    os.chmod(top, 0o755)
    return top


def in_process_baseline(d: Path, truth: dict, n: int = 200) -> list[float]:
    """The same decide through the in-process transport, on a copy of the project (same run)."""
    from labelloop.core.api.client import LocalClient
    from labelloop.core.api.service import Service

    copy = d.parent / "baseline"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(d, copy)
    svc = Service(copy, compute="thread", owner="bench")
    c = LocalClient(svc, "bench")
    out = []
    item = c.call("next")["item"]
    for _ in range(n):
        if item is None:
            svc.handle("bench", "retrain_start", {})
            svc.wait_job()
            item = c.call("next")["item"]
            if item is None:
                break
        t = time.perf_counter()
        ans = c.call(
            "decide", item_id=item["item_id"], action="label", labels=[truth[item["item_id"]]], msg_id=uuid.uuid4().hex
        )
        out.append((time.perf_counter() - t) * 1000)
        item = ans["item"]
    svc.close()
    shutil.rmtree(copy, ignore_errors=True)
    return out


def verify(d: Path, acked: list[tuple[str, str, int]], annotators: list[str] | None = None) -> dict:
    from labelloop.core.api.assign import overlap_need
    from labelloop.core.store.project import Project

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
    return {
        "acknowledged": len(acked_msgs),
        "stored": len(stored_msgs),
        "acknowledged_missing": len(acked_msgs - set(stored_msgs)),
        "stored_twice": len(stored_msgs) - len(set(stored_msgs)),
        "items_over_needed_count": len(over),
        "annotator_twice_on_an_item": len(twice),
        "items_with_two_labels": sum(len(a) >= 2 for a in per_item.values()),
    }


HOSTILE = r"""
import array, json, os, resource, socket, sys, time
sock, seconds = sys.argv[1], float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))   # room for 2,000 sockets of our own
out = {"idle_open": 0, "idle_refused_busy": 0, "idle_closed_by_server": 0, "connect_failed": 0,
       "surrogate_answers": {}, "fd_messages": 0, "denied_pings": 0}
held = []
for _ in range(2000):                                       # 2,000 idle connections
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(sock); held.append(s)
    except OSError:
        out["connect_failed"] += 1; s.close()
time.sleep(1.0)
for s in held:                                              # what the server did with each
    s.setblocking(False)
    try:
        data = s.recv(65536)
    except BlockingIOError:
        data = None
    except OSError:
        data = b""
    if data and b'"busy"' in data:
        out["idle_refused_busy"] += 1
    elif data == b"":
        out["idle_closed_by_server"] += 1
    else:
        out["idle_open"] += 1
def ask(payload):  # one request on a new connection; a refusal or a closed connection is an answer too
    s = socket.socket(socket.AF_UNIX); s.settimeout(10)
    try:
        s.connect(sock); f = s.makefile("rb"); f.readline()          # the hello
        s.sendall(payload + b"\n"); line = f.readline(); f.close()
    except OSError:
        return {"error": {"code": "closed"}}
    finally:
        s.close()
    return json.loads(line) if line else {"error": {"code": "closed"}}
t0 = time.monotonic()
while time.monotonic() - t0 < seconds:
    for field in ("item_id", "session"):                    # surrogate ids
        a = ask(json.dumps({"id": 1, "op": "decide", "args": {"item_id": "x", "action": "label",
                            "msg_id": "m" * 12, field: "\ud800"}}).encode())
        code = (a.get("error") or {}).get("code", "ok")
        out["surrogate_answers"][code] = out["surrogate_answers"].get(code, 0) + 1
    try:                                                    # descriptors without a request
        s = socket.socket(socket.AF_UNIX); s.connect(sock)
        for _ in range(50):
            r, w = os.pipe()
            s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
            os.close(r); os.close(w); out["fd_messages"] += 1
        s.close()
    except OSError:
        pass
    for _ in range(50):                                     # a refused-ping loop
        try:
            a = ask(b'{"id": 1, "op": "ping"}')
        except OSError:
            a = {"error": {"code": "closed"}}
        out["denied_pings"] += (a.get("error") or {}).get("code") in ("unknown_user", "busy", "closed")
    time.sleep(0.2)
for s in held:
    s.close()
print(json.dumps(out))
"""


def gzip_bomb(path: Path) -> Path:
    """About 200 MB of CSV in well under 1 MB of gzip."""
    import gzip

    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(b"id,text\n")
        row = b"x," + b"a" * 1000 + b"\n"
        for _ in range(200_000):
            f.write(row)
    return path


def run_load(
    d: Path,
    truth_path: Path,
    seconds: float,
    n_annotators: int,
    *,
    kill_at: float | None = None,
    hostile_mix: bool = False,
) -> dict:
    sock = d / "run" / "labelloop.sock"
    people = n_annotators + 2
    client = str(ROOT / "bench" / "team_client.py")
    if can_make_users():
        users = make_users(people)
        transport, tcp = "unix socket, one OS user per person (runuser), serve --group", None
        cmds = [["runuser", "-u", u, "--", "/usr/bin/python3", client] for u in users]
        tails = [[] for _ in users]
    else:
        from labelloop.core.api.server import add_token

        users = [f"user{i:02d}" for i in range(people)]
        port = 7420 + random.Random().randrange(500)
        tcp = f"127.0.0.1:{port}"
        transport = f"TCP with tokens ({tcp}): not root, cannot create OS users"
        cmds = [[sys.executable, client] for _ in users]
        tails = [["tcp", "127.0.0.1", str(port), u, add_token(d, u)] for u in users]
    cfg = d / "labelloop.toml"
    cfg.write_text(
        cfg.read_text()
        .replace("annotators = []", f"annotators = {json.dumps(users[:n_annotators])}")
        .replace("reviewers = []", f"reviewers = {json.dumps(users[n_annotators:])}")
    )
    proc = start_server(d, tcp)
    if tcp:
        time.sleep(0.5)
    stop = threading.Event()
    report: dict = {}
    h = threading.Thread(target=hostile, args=(sock, stop, report), daemon=True)
    procs = []
    for i, (cmd, tail) in enumerate(zip(cmds, tails)):
        role = "annotator" if i < n_annotators else "reviewer"
        procs.append(
            subprocess.Popen(
                [*cmd, role, str(sock), str(seconds), str(i), str(truth_path), *tail],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    h.start()
    attacker = bomb = None
    if hostile_mix:
        attacker = subprocess.Popen(
            ["runuser", "-u", HOSTILE_USER, "--", "/usr/bin/python3", "-c", HOSTILE, str(sock), str(seconds - 10)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(seconds / 3)
        bomb = subprocess.run(
            [sys.executable, "-m", "labelloop.tui.cli", "import", str(d), str(gzip_bomb(d.parent / "bomb.csv.gz"))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    t0 = time.monotonic()
    rss = []
    restarted = None
    killed = False
    killed_wall = 0.0
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
            killed_wall = time.time()
            proc = start_server(d, tcp)
            restarted = time.monotonic() - k
    stop.set()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        if p.returncode != 0:
            results.append({"errors": [f"client exited {p.returncode}: {err.strip()[-200:]}"]})
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    h.join(timeout=10)
    import sys as _s

    _s.path.insert(0, str(ROOT))
    from labelloop.core.api.client import SocketClient

    c = SocketClient(sock)
    left = c.call("status")["team"]["open_items"]
    c.close()
    if hostile_mix:
        a_out, a_err = attacker.communicate(timeout=300)
        report["hostile_mix"] = json.loads(a_out.strip().splitlines()[-1]) if a_out.strip() else {"error": a_err[-300:]}
        report["gzip_bomb"] = {"exit_code": bomb.returncode, "said": bomb.stderr.strip()[-240:]}
        report["still_accepting_at_end"] = SocketClient(sock).call("ping")["actor"] is not None
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    ann, rev = results[:n_annotators], results[n_annotators:]
    acked = [m for r in ann for m in r.get("acked", [])]
    lat = np.array([x for r in ann for x in r.get("latencies", [])])

    def p99(xs):
        return round(float(np.percentile(xs, 99)), 1) if len(xs) else None

    out = {
        "transport": transport,
        "seconds": seconds,
        "annotators": n_annotators,
        "reviewers": len(rev),
        "actors_seen": len({r.get("actor") for r in results}),
        "decide_ms": {
            "n": int(lat.size),
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p99": p99(lat),
            "max": round(float(lat.max()), 1),
        },
        "reviewer_ms_p99": {
            op: p99([x for r in rev for x in r.get("latencies", {}).get(op, [])])
            for op in ("status", "metrics", "next_items")
        },
        "empty_queue_waits": sum(r.get("waits", 0) for r in ann),
        "reconnects": sum(r.get("reconnects", 0) for r in results),
        "longest_client_wait_s": max(r.get("waited_s", 0) for r in results),
        "refused_after_restart": sum(e.startswith("not_leased") for r in results for e in r.get("errors", [])),
        "client_errors": sorted({e for r in results for e in r.get("errors", [])})[:6],
        "server_rss_mib": " ".join(f"{t}s:{r:.0f}" for t, r in rss),
        "open_items_at_end": left,
        **report,
        **verify(d, [(m, None, None) for m in acked]),
    }
    if kill_at is not None:
        out["killed_at_s"], out["restart_s"] = kill_at, round(restarted or -1, 2)
        # decisions answered more than 5 s after the restart: the steady state again
        later = [ms for r in ann for ms, at in zip(r.get("latencies", []), r.get("at", [])) if at > killed_wall + 5]
        resent = [
            ms
            for r in ann
            for ms, at in zip(r.get("latencies", []), r.get("at", []))
            if killed_wall <= at <= killed_wall + 5
        ]
        out["decide_ms_within_5s_of_restart"] = {"n": len(resent), "max": round(max(resent), 1) if resent else None}
        out["decide_ms_after"] = {"n": len(later), "p99": p99(later)}
    if hostile_mix:
        from labelloop.core.store.project import Project

        with Project.open(d) as p:
            out["denied_events_stored"] = p.store.scalar("SELECT count(*) FROM event_log WHERE kind = 'denied'")
    return out


HOSTILE_USER = "llhostile"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--skip-fault", action="store_true")
    ap.add_argument("--hostile", action="store_true", help="add the hostile mix (root: a real OS user attacks)")
    args = ap.parse_args()
    if args.hostile and not can_make_users():
        raise SystemExit("--hostile needs root (the attacker is a real OS user in the team's group)")
    top = team_folder("team-bench")
    try:
        d, truth = build(top / "load" / "proj")
        truth_path = top / "truth.json"
        truth_path.write_text(json.dumps(truth))
        os.chmod(truth_path, 0o644)
        base = np.array(in_process_baseline(d, truth))
        print(
            f"baseline (in-process decide, same project, same run): p50 {np.percentile(base, 50):.1f} ms, "
            f"p99 {np.percentile(base, 99):.1f} ms over {base.size}"
        )
        if args.hostile:
            make_users(0)
            if subprocess.run(["id", HOSTILE_USER], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "-M", "-G", GROUP, "-s", "/bin/sh", HOSTILE_USER], check=True)
        load = run_load(d, truth_path, args.seconds, args.annotators, hostile_mix=args.hostile)
        from labelloop.core.store.project import Project

        with Project.open(d) as p:
            load["retrains"] = p.store.scalar("SELECT count(*) FROM models") - 1
        print("load:", json.dumps(load, indent=1))
        rss = [float(x.split(":")[1]) for x in load["server_rss_mib"].split()]
        if rss:
            q = max(1, len(rss) // 4)
            print(f"server RSS: first quarter max {max(rss[:q]):.0f} MiB, last quarter max {max(rss[-q:]):.0f} MiB")
        print(
            f"decide p99 over the socket {load['decide_ms']['p99']} ms = "
            f"{load['decide_ms']['p99'] / max(np.percentile(base, 99), 1e-3):.1f}x the in-process p99 "
            "(target <= 100 ms)"
        )
        if not args.skip_fault:
            d2, _ = build(top / "fault" / "proj")
            fault = run_load(d2, truth_path, max(30.0, args.seconds / 2), args.annotators, kill_at=15)
            print("fault (server killed with SIGKILL at 15 s, restarted):", json.dumps(fault, indent=1))
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
