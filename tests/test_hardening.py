"""No client can take the server down, and faults are cleaned up (issue: team mode on a shared server).

Each test attacks the server as a client could, then checks that the attacker got one answer (or a
closed connection), that nothing stored was lost, and that a legitimate client is still served."""

from __future__ import annotations

import array
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from labelloop.core.api import server as server_mod
from labelloop.core.api.client import LocalClient, SocketClient
from labelloop.core.api.protocol import SOCKET_NAME, ApiError
from labelloop.core.api.server import Server
from labelloop.core.api.service import Service
from labelloop.core.config import CONFIG_NAME
from labelloop.core.store.project import Project, current_actor
from tests.conftest import ROOT
from tests.tui_helpers import TRUTH, project_copy


@pytest.fixture
def served(tmp_path):
    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()
    yield d, srv
    srv.stop()


def _raw(d):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(d / SOCKET_NAME))
    f = s.makefile("rb")
    assert "hello" in json.loads(f.readline())
    return s, f


def _ask(s, f, payload: bytes) -> dict:
    s.sendall(payload + b"\n")
    return json.loads(f.readline())


def _label(c, item):
    return c.call(
        "decide", item_id=item["item_id"], action="label", labels=[TRUTH[item["item_id"]]], msg_id=uuid.uuid4().hex
    )


def _events(d, where="TRUE"):
    with Project.open(d) as p:
        return p.store.dicts(f"SELECT * FROM event_log WHERE actor <> 'seed-annotator' AND {where} ORDER BY event_id")


@pytest.mark.parametrize("field", ["session", "item_id", "msg_id", "note"])
def test_a_lone_surrogate_fails_that_request_only_and_never_the_store(served, field):
    d, srv = served
    good = SocketClient(d / SOCKET_NAME)
    item = good.call("next")["item"]
    s, f = _raw(d)
    args = {"item_id": item["item_id"], "action": "label", "labels": ["ham"], "msg_id": "m" * 12, field: "\ud800"}
    payload = json.dumps({"id": 1, "op": "decide", "args": args}).encode()  # ensure_ascii: the escape \ud800
    assert b"\\ud800" in payload
    answer = _ask(s, f, payload)
    assert answer["ok"] is False and answer["error"]["code"] == "bad_request"
    assert "lone surrogate" in answer["error"]["message"]
    assert srv.service.store_failure is None
    _label(good, item)  # everyone else goes on
    assert good.call("status")["events"] >= 1 and len(_events(d)) == 1
    s.close()
    good.close()


def test_deep_nesting_nul_and_huge_strings_are_one_error_answer_and_the_connection_lives_on(served):
    d, _srv = served
    s, f = _raw(d)
    for payload in (
        b"[" * 1000,
        b'{"id": 2, "op": "ping", "args": ' + b"[" * 100 + b"]" * 100 + b"}",
        json.dumps({"id": 3, "op": "guidelines", "args": {"x": "\x00"}}).encode(),
    ):
        answer = _ask(s, f, payload)
        assert answer["ok"] is False and answer["error"]["code"] == "bad_request", answer
    assert _ask(s, f, b'{"id": 4, "op": "ping"}')["data"]["actor"] == current_actor()
    s.close()


def test_connections_are_bounded_per_user_and_released(served, monkeypatch):
    d, srv = served
    monkeypatch.setattr(server_mod, "MAX_PER_USER", 5)
    held = [_raw(d) for _ in range(5)]
    for s, f in held:
        assert _ask(s, f, b'{"id": 1, "op": "ping"}')["ok"]
    s6 = socket.socket(socket.AF_UNIX)
    s6.connect(str(d / SOCKET_NAME))
    f6 = s6.makefile("rb")
    assert "hello" in json.loads(f6.readline())
    refusal = json.loads(f6.readline())
    assert refusal["error"]["code"] == "busy" and "5 open connections" in refusal["error"]["message"]
    assert f6.readline() == b""  # and closed
    for s, f in held:
        f.close()
        s.close()
    time.sleep(0.5)
    c = SocketClient(d / SOCKET_NAME)  # the slots are free again
    assert c.call("ping")["actor"] == current_actor()
    c.close()


def test_a_connection_that_says_nothing_is_closed_after_the_deadline(served, monkeypatch):
    d, srv = served
    monkeypatch.setattr(server_mod, "FIRST_REQUEST_SECONDS", 0.5)
    s, f = _raw(d)
    t = time.monotonic()
    assert f.readline() == b""  # closed by the server, not by us
    assert time.monotonic() - t < 5
    # a client that has spoken may stay idle
    s, f = _raw(d)
    assert _ask(s, f, b'{"id": 1, "op": "ping"}')["ok"]
    time.sleep(1.0)
    assert _ask(s, f, b'{"id": 2, "op": "ping"}')["ok"]
    s.close()


def test_unsigned_tcp_connections_are_bounded_and_never_starve_the_socket(tmp_path, monkeypatch):
    monkeypatch.setattr(server_mod, "MAX_UNSIGNED_TCP", 4)
    d = project_copy(tmp_path)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    srv = Server(d, compute="thread", tcp=("127.0.0.1", port))
    srv.start()
    try:
        flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(12)]
        refused = 0
        for s in flood:
            f = s.makefile("rb")
            f.readline()  # the hello
            s.settimeout(0.5)
            try:
                line = f.readline()
            except (socket.timeout, OSError):
                continue  # admitted, waiting to sign in
            if line and json.loads(line)["error"]["code"] == "busy":
                refused += 1
        assert refused == 8
        c = SocketClient(d / SOCKET_NAME)  # Unix users are not touched by the TCP flood
        assert c.call("ping")["actor"] == current_actor()
        c.close()
        for s in flood:
            s.close()
    finally:
        srv.stop()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_descriptors_sent_without_a_request_are_closed_at_once(served):
    d, srv = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(d / SOCKET_NAME))
    f = s.makefile("rb")
    f.readline()
    time.sleep(0.2)
    before = _fd_count()
    for _ in range(200):  # no newline: these belong to no request
        r, w = os.pipe()
        s.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w]))])
        os.close(r)
        os.close(w)
    time.sleep(0.5)
    assert _fd_count() <= before + 5, (before, _fd_count())
    c = SocketClient(d / SOCKET_NAME)
    assert c.call("ping")["actor"] == current_actor()
    c.close()
    s.close()


def test_accept_errors_are_retried_and_the_listener_lives_on(served, monkeypatch):
    """Out of descriptors, accept() fails: the server says so once and keeps accepting."""
    d, srv = served
    logged = []
    srv.log = logged.append

    class Flaky:
        def __init__(self, real, failures):
            self.real, self.failures = real, failures

        def accept(self):
            if self.failures:
                self.failures -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return self.real.accept()

    listener = socket.socket(socket.AF_UNIX)
    path = d / "second.sock"
    listener.bind(str(path))
    listener.listen(8)
    import threading

    t = threading.Thread(target=srv._accept, args=(Flaky(listener, 5), False), daemon=True)
    t.start()
    c = SocketClient(path)
    assert c.call("ping")["actor"] == current_actor()
    assert len([m for m in logged if "Too many open files" in m]) == 1
    c.close()
    listener.close()


def test_refusals_are_logged_once_a_minute_per_user_with_their_count(tmp_path):
    d = project_copy(tmp_path)
    cfg = d / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace("annotators = []", 'annotators = ["alice"]'))
    now = [1_000_000.0]
    svc = Service(d, compute="thread", owner="admin", clock=lambda: now[0])
    mallory = LocalClient(svc, "mallory")
    for _ in range(500):
        with pytest.raises(ApiError) as e:
            mallory.call("ping")
        now[0] += 0.05
    assert e.value.code == "unknown_user"
    now[0] += 61
    with pytest.raises(ApiError):
        mallory.call("ping")
    svc.close()
    denied = _events(d, "kind = 'denied'")
    assert len(denied) == 3  # first, summary, the new minute
    assert denied[1]["actor"] == "mallory" and denied[1]["note"].startswith("499 more refusals between")


def test_reads_go_on_during_a_store_failure_and_writes_resume_without_a_restart(tmp_path, monkeypatch):
    d = project_copy(tmp_path)
    svc = Service(d, compute="thread")
    c = LocalClient(svc, current_actor())
    item = c.call("next")["item"]
    monkeypatch.setenv("LABELLOOP_FAULT", "store-append")  # the disk fails
    with pytest.raises(ApiError) as e:
        _label(c, item)
    assert e.value.code == "store_failed" and svc.store_failure is not None
    assert c.call("status")["project"] and c.call("next_items", n=3)["items"]  # reads go on
    monkeypatch.delenv("LABELLOOP_FAULT")  # the disk is back
    _label(c, item)
    assert svc.store_failure is None
    svc.close()
    assert [e["item_id"] for e in _events(d)] == [item["item_id"]]


def _mount_small_disk(path, mib: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_a_real_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_is_freed(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_small_disk(disk, 64):
        pytest.skip("needs root and tmpfs to fill a real disk")
    try:
        d = project_copy(disk)
        srv = Server(d, compute="thread")
        srv.start()
        c = SocketClient(d / SOCKET_NAME)
        item = c.call("next")["item"]
        _label(c, item)
        with open(disk / "filler", "wb") as filler:  # someone fills the disk
            try:
                while True:
                    filler.write(b"\0" * (1 << 20))
                    filler.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        failed = None
        for _ in range(50):
            item = c.call("next")["item"]
            try:
                _label(c, item)
            except ApiError as exc:
                failed = exc
                break
        assert failed is not None and failed.code == "store_failed", failed
        assert c.call("status")["events"] >= 1  # reads still answer
        r = subprocess.run(
            [sys.executable, "-m", "labelloop.tui.cli", "export", str(d), str(tmp_path / "x.parquet")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        os.remove(disk / "filler")  # space is back
        _label(c, item)  # no restart
        assert srv.service.store_failure is None
        c.close()
        srv.stop()
        assert len(_events(d)) >= 2
        assert r.returncode == 3 and "export failed" in r.stderr, r.stderr  # the full disk is the store's: 3
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _serve(d, env: dict | None = None) -> subprocess.Popen:
    """``labelloop serve d`` in a child process (its output kept for a failing test to show)."""
    return subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "serve", str(d)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("during", ["idle", "retrain", "import"])
def test_a_server_killed_by_sigkill_leaves_no_process_and_its_next_start_no_temporary_file(tmp_path, during):
    """kill -9 of the server while idle, during a retrain (held in the training process) and during an
    import (held after the server copied the file): its training process and the resource tracker
    end with it, and the next start removes the import's private copy."""
    d = project_copy(tmp_path)
    marker = tmp_path / "reached"
    env = {**os.environ, "LABELLOOP_FAULT_MARKER": str(marker), "LABELLOOP_FAULT_SLEEP": "120"}
    if during != "idle":
        env["LABELLOOP_FAULT"] = {"retrain": "compute-round", "import": "import-before-commit"}[during]
    proc = _serve(d, env)
    clients: list[subprocess.Popen] = []
    try:
        kids = []
        for _ in range(300):  # the server warms its training process up
            kids = [k for k in _children(proc.pid) if _alive(k)]
            if kids and (d / SOCKET_NAME).exists():
                break
            time.sleep(0.1)
        assert kids, "no training process started"
        if during == "retrain":
            clients.append(
                subprocess.Popen(
                    [sys.executable, "-m", "labelloop.tui.cli", "train", str(d)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        elif during == "import":
            src = tmp_path / "big.csv"
            src.write_text("id,text\n" + "".join(f"n{i},a new message number {i}\n" for i in range(20_000)))
            clients.append(
                subprocess.Popen(
                    [sys.executable, "-m", "labelloop.tui.cli", "import", str(d), str(src), "--id-col", "id"],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        if during != "idle":
            for _ in range(600):
                if marker.exists():
                    break
                time.sleep(0.1)
            assert marker.exists(), f"the {during} did not start"
        if during == "import":
            assert any(p.name.startswith(".incoming-") for p in (d / "cache").iterdir())
        family = {k for k in _children(proc.pid) if _alive(k)}
        family |= {g for k in family for g in _children(k)}
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(k) for k in family):
            time.sleep(0.2)
        assert not any(_alive(k) for k in family), [k for k in family if _alive(k)]
    finally:
        for p in [proc, *clients]:
            if p.poll() is None:
                p.kill()
    logged = []
    srv = Server(d, compute="thread", log=logged.append)  # the next start
    srv.stop()
    leftovers = [p.name for p in [*(d / "cache").iterdir(), *d.iterdir()] if p.name.startswith(".")]
    assert leftovers == [], leftovers
    if during == "import":
        assert any(".incoming-" in m for m in logged), logged


def test_sigterm_sent_as_soon_as_the_socket_exists_stops_the_server(tmp_path):
    """A service manager may stop the server the moment it is up (a health check has just connected):
    that SIGTERM once went unheard (the kernel handed it to another thread while the main thread slept
    in an untimed wait)."""
    d = project_copy(tmp_path)
    for _ in range(3):
        proc = _serve(d)
        try:
            for _ in range(600):  # up when a connection is accepted (as a health check sees it)
                try:
                    with socket.socket(socket.AF_UNIX) as probe:
                        probe.connect(str(d / SOCKET_NAME))
                    break
                except OSError:
                    time.sleep(0.01)
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_sigterm_during_a_retrain_building_features_stops_the_server_promptly(tmp_path):
    """SIGTERM while the training process builds the features of a retrain (held there for 120 s by a
    fault point): the server does not wait for the retrain; it and its training process are gone in
    seconds, nothing is half-written, and the next start removes the items snapshot the build left."""
    d = project_copy(tmp_path)
    (d / "cache" / "features.json").unlink()  # the retrain must build the features
    marker = tmp_path / "reached"
    env = {
        **os.environ,
        "LABELLOOP_FAULT": "build-features",
        "LABELLOOP_FAULT_MARKER": str(marker),
        "LABELLOOP_FAULT_SLEEP": "120",
    }
    proc = _serve(d, env)
    train = None
    try:
        for _ in range(300):
            if (d / SOCKET_NAME).exists():
                break
            time.sleep(0.1)
        train = subprocess.Popen(
            [sys.executable, "-m", "labelloop.tui.cli", "train", str(d)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(600):
            if marker.exists():
                break
            time.sleep(0.1)
        assert marker.exists(), "the feature build did not start"
        assert list((d / "cache").glob(".snapshot-*.parquet")), "the items were not handed over as a snapshot"
        family = {k for k in _children(proc.pid) if _alive(k)}
        family |= {g for k in family for g in _children(k)}
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        stopped = time.monotonic() - t0
        assert stopped < 20, f"the server took {stopped:.1f} s to stop (the build holds for 120 s)"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(k) for k in family):
            time.sleep(0.2)
        assert not any(_alive(k) for k in family), [k for k in family if _alive(k)]
    finally:
        for p in (proc, train):
            if p is not None and p.poll() is None:
                p.kill()
    assert not (d / "cache" / "features.json").exists()  # no cache was half-written and called current
    logged = []
    srv = Server(d, compute="thread", log=logged.append)  # the next start
    srv.stop()
    assert not list((d / "cache").glob(".snapshot-*")), "the next start left the snapshot"
    assert any(".snapshot-" in m for m in logged), logged


def test_a_server_start_removes_what_a_killed_run_left_and_says_so(tmp_path):
    d = project_copy(tmp_path)
    (d / "cache").mkdir(exist_ok=True)
    (d / "cache" / ".incoming-abc.csv").write_bytes(b"x" * 4096)
    (d / "cache" / ".export-xyz").mkdir()
    (d / "cache" / ".export-xyz" / "export.parquet").write_bytes(b"y" * 100)
    (d / ".labelloop.toml.k2j.tmp").write_text("half")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    os.symlink(victim, d / "cache" / ".incoming-link.csv")  # a link is removed, never followed
    logged = []
    srv = Server(d, compute="thread", log=logged.append)
    srv.stop()
    left = [p.name for p in [*(d / "cache").iterdir(), *d.iterdir()] if p.name.startswith(".")]
    assert left == [] and victim.read_text() == "keep me"
    assert "removed 4 temporary file(s)" in logged[0] and "cache/.incoming-abc.csv" in logged[0]


def test_a_gzip_bomb_is_refused_while_streaming_and_everyone_else_goes_on(served, tmp_path):
    """A small .gz that expands hundreds of times is refused after reading the allowed amount, on the
    importing connection's thread; nothing is imported and the others keep deciding."""
    import gzip

    d, srv = served
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(b"id,text\n")
        row = b"x," + b"a" * 1000 + b"\n"
        for _ in range(60_000):  # about 60 MB of text in well under 1 MB
            f.write(row)
    assert bomb.stat().st_size < 1 << 20
    good = SocketClient(d / SOCKET_NAME)
    before = good.call("status")["items"]["total"]
    r = subprocess.run(
        [sys.executable, "-m", "labelloop.tui.cli", "import", str(d), str(bomb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "expands to more than" in r.stderr and "max_gzip_ratio" in r.stderr, r.stderr
    assert good.call("status")["items"]["total"] == before
    _label(good, good.call("next")["item"])
    assert not any(p.name.startswith(".incoming-") for p in (d / "cache").iterdir())
    good.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_embeddings_cache_is_rebuilt_by_train_check_and_report(tmp_path, damage):
    from tests.conftest import run_cli

    d = project_copy(tmp_path)
    cfg = d / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace('kind = "auto"', 'kind = "embed"'))
    r = run_cli("train", str(d))
    assert r.returncode == 0, r.stderr
    npy = d / "cache" / "embeddings.npy"
    size = npy.stat().st_size
    if damage == "truncate":
        with open(npy, "r+b") as f:
            f.truncate(size // 2)
    else:
        npy.write_bytes(b"\x93NUMPY" + os.urandom(500))
    for cmd in (("train", str(d)), ("check", str(d)), ("report", str(d), "--out", str(tmp_path / "rep"))):
        r = run_cli(*cmd)
        assert r.returncode in (0, 1), (cmd, r.stderr)  # check exits 1 when a check fails
        assert "unexpected error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert npy.stat().st_size == size  # rebuilt whole


def test_a_server_that_refuses_to_start_gives_the_umask_back(tmp_path):
    """A server inside a test process sets umask 077 for its files; a refusal must not leave it set."""
    d = project_copy(tmp_path)
    os.chmod(d / CONFIG_NAME, 0o666)
    before = os.umask(0o022)
    os.umask(before)
    with pytest.raises(Exception, match="writable by"):
        Server(d, compute="thread")
    after = os.umask(0o022)
    os.umask(after)
    assert after == before
