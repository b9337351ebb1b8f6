"""``labelloop serve``: the project API over the Unix socket, identity from the socket, commands that
work while others label, hostile clients, a server killed with -9, and two real OS users."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from labelloop.core.api.client import MAX_LINE, SOCKET_NAME, SocketClient
from labelloop.core.api.protocol import PROTOCOL_VERSION, ApiError
from labelloop.core.api.server import Server
from labelloop.core.store.project import Project, current_actor
from tests.conftest import ROOT, run_cli, write_csv
from tests.tui_helpers import TRUTH, project_copy


def _events(d, where="TRUE"):
    with Project.open(d) as p:
        return p.store.dicts(f"SELECT * FROM event_log WHERE actor <> 'seed-annotator' AND {where} ORDER BY event_id")


@pytest.fixture
def served(tmp_path):
    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()
    yield d, srv
    srv.stop()


def _server_process(d: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "serve", str(d), "--train-in-thread", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for _ in range(300):
        try:
            SocketClient(d / SOCKET_NAME, reconnect_seconds=0).close()
            return proc
        except (OSError, ApiError):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode())
            time.sleep(0.05)
    raise AssertionError("the server did not start")


def _label(c, item, msg=None):
    return c.call(
        "decide",
        item_id=item["item_id"],
        action="label",
        labels=[TRUTH[item["item_id"]]],
        msg_id=msg or uuid.uuid4().hex,
    )


def test_the_actor_is_the_sockets_peer_never_the_request(served):
    d, srv = served
    c = SocketClient(d / SOCKET_NAME)
    assert c.actor == current_actor()
    with pytest.raises(ApiError) as e:
        c.call("next", actor="bob")
    assert e.value.code == "bad_request"
    item = c.call("next")["item"]
    _label(c, item)
    c.close()
    # LOGNAME and USER do not change who a command acts as
    env = {**os.environ, "LOGNAME": "alice", "USER": "alice"}
    r = run_cli("status", str(d), "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert [a["actor"] for a in json.loads(r.stdout)["annotators"] if a["actor"] != "seed-annotator"] == [
        current_actor()
    ]
    assert [e["actor"] for e in _events(d)] == [current_actor()]


def test_socket_file_is_private_to_the_folder_group(served):
    d, srv = served
    st = (d / SOCKET_NAME).stat()
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == d.stat().st_gid


def test_commands_work_while_someone_labels(served, tmp_path):
    d, srv = served
    ws_client = SocketClient(d / SOCKET_NAME)
    item = ws_client.call("next")["item"]
    _label(ws_client, item)
    # every command goes through the server (the DuckDB file is the server's alone)
    for args in (("status", str(d)), ("next", str(d), "--n", "3", "--json")):
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
    nxt = json.loads(run_cli("next", str(d), "--n", "3", "--json").stdout)
    assert len(nxt) == 3 and all("probs" in i for i in nxt)
    out = tmp_path / "out.parquet"
    r = run_cli("export", str(d), str(out))
    assert r.returncode == 0, r.stderr
    import polars as pl

    df = pl.read_parquet(out)
    assert item["item_id"] in df["item_id"].to_list()
    f = write_csv(tmp_path / "more.csv", ["id", "text"], [["new-1", "a brand new message"], ["new-2", "another one"]])
    r = run_cli("import", str(d), str(f), "--id-col", "id")
    assert r.returncode == 0, r.stderr
    assert "Imported 2 of 2 rows" in r.stdout and str(f.resolve()) in r.stdout
    r = run_cli("train", str(d), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model_version"] == 2
    ws_client.close()


def test_hostile_clients_do_not_stop_the_server(served):
    d, srv = served
    good = SocketClient(d / SOCKET_NAME)
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(str(d / SOCKET_NAME))
    f = raw.makefile("rb")
    assert json.loads(f.readline())["hello"]["protocol"] == PROTOCOL_VERSION  # the server speaks first
    raw.sendall(b"this is not json\n")
    assert json.loads(f.readline())["error"]["code"] == "bad_request"
    raw.sendall(b'{"id": 7, "op": "format_disk", "args": {}}\n')
    ans = json.loads(f.readline())
    assert ans["id"] == 7 and ans["error"]["code"] == "unknown_op"
    raw.sendall(b'[1, 2]\n{"id": 8, "op": "ping"}\n')
    assert json.loads(f.readline())["error"]["code"] == "bad_request"
    assert json.loads(f.readline())["data"]["actor"] == current_actor()
    assert good.call("ping")["actor"] == current_actor()
    # an oversized line: answered once, that connection closed, the others go on
    big = socket.socket(socket.AF_UNIX)
    big.connect(str(d / SOCKET_NAME))
    try:
        big.sendall(b"x" * (MAX_LINE + 10))
    except OSError:
        pass
    bf = big.makefile("rb")
    assert "hello" in json.loads(bf.readline())
    assert json.loads(bf.readline())["error"]["code"] == "too_large"
    assert bf.readline() == b""
    # a client killed half-way through a request
    code = (
        f"import socket, os; s = socket.socket(socket.AF_UNIX); s.connect({str(d / SOCKET_NAME)!r}); "
        's.sendall(b\'{"id": 1, "op": "ne\'); os.kill(os.getpid(), 9)'
    )
    subprocess.run([sys.executable, "-c", code], timeout=30)
    item = good.call("next")["item"]
    assert _label(good, item)["event_id"]
    good.close()
    raw.close()
    big.close()
    assert len(_events(d)) == 1


def test_workspace_over_the_socket_is_the_same_api(served):
    from labelloop.core.api.workspace import Workspace

    d, srv = served
    ws = Workspace(d)
    assert ws.transport == "socket" and ws.service is None
    first = ws.current()
    ws.label(first, [TRUTH[first.item_id]])
    second = ws.current()
    assert second.item_id != first.item_id
    assert ws.undo().item_id == first.item_id
    ws.label(ws.current(), [TRUTH[first.item_id]])
    r = ws.retrain(seed=4)
    assert r.model_version == 2
    assert ws.current().item_id == second.item_id  # the item in hand stays over a new batch
    ws.close()
    assert [e["kind"] for e in _events(d)] == ["label", "undo", "label"]


def test_kill_9_loses_no_acknowledged_decision_and_clients_reconnect(tmp_path):
    d = project_copy(tmp_path)
    proc = _server_process(d)
    c = SocketClient(d / SOCKET_NAME, reconnect_seconds=20)
    acked = []
    for _ in range(10):
        item = c.call("next")["item"]
        acked.append(_label(c, item)["event_id"])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (d / SOCKET_NAME).exists()  # left behind by the dead server
    # with no server, commands open the project in-process (the stale socket is recognised)
    r = run_cli("status", str(d), "--json")
    assert r.returncode == 0, r.stderr
    proc = _server_process(d)  # the new server replaces the stale socket
    try:
        item = c.call("next")["item"]  # the same client reconnects by itself
        acked.append(_label(c, item)["event_id"])
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert not (d / SOCKET_NAME).exists()
    assert sorted(e["event_id"] for e in _events(d)) == sorted(acked)


def test_a_second_server_is_refused(served):
    d, srv = served
    r = run_cli("serve", str(d))
    assert r.returncode == 2 and "already runs" in r.stderr


def test_import_and_export_through_the_server_never_open_client_paths(served, tmp_path):
    """The server reads and writes only descriptors the client opened: a path the client cannot read
    is refused by the client's own open, not read by the server for it."""
    d, srv = served
    c = SocketClient(d / SOCKET_NAME)
    with pytest.raises(ApiError) as e:  # a bare path, without a descriptor, is not opened
        c.call("import", path="/etc/shadow", source_name="/etc/shadow")
    assert e.value.code == "bad_request"
    assert "handed over" in e.value.message
    with pytest.raises(ApiError) as e:
        c.call("export", path=str(tmp_path / "x.parquet"))
    assert "handed over" in e.value.message and not (tmp_path / "x.parquet").exists()
    c.close()


# -- two real OS users ---------------------------------------------------------------------------------
def _can_make_users() -> bool:
    return os.geteuid() == 0 and shutil.which("useradd") and shutil.which("runuser") and shutil.which("groupadd")


@pytest.fixture
def request_cleanup():
    """Folders, and the OS users and groups a test created (("user", name), ("group", name)): removed
    afterwards, users before their group, whatever the test's outcome."""
    made: list = []
    yield made
    for f in made:
        if isinstance(f, Path):
            shutil.rmtree(f, ignore_errors=True)
    for kind in ("user", "group"):
        for f in made:
            if isinstance(f, tuple) and f[0] == kind:
                subprocess.run([f"{kind}del", f[1]], capture_output=True)


# What a user's own process runs: the wire protocol with nothing but the standard library (the test
# users cannot read this checkout's virtualenv, and the protocol needs none of it).
RAW_CLIENT = """
import json, socket, sys, uuid
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb'); f.readline()  # the hello
def call(op, **args):
    s.sendall((json.dumps({'id': 1, 'op': op, 'args': args}) + '\\n').encode())
    a = json.loads(f.readline())
    if not a['ok']:
        raise SystemExit(a['error']['code'] + ': ' + a['error']['message'])
    return a['data']
for _ in range(5):
    it = call('next')['item']
    call('decide', item_id=it['item_id'], action='label', labels=['ham'], msg_id=uuid.uuid4().hex)
print(call('ping')['actor'])
"""


@pytest.mark.skipif(not _can_make_users(), reason="needs root with useradd, groupadd and runuser")
def test_two_real_users_label_at_once_with_identities_from_the_socket(request_cleanup):
    group = "llteam"
    users = ["llalice", "llbob"]
    if subprocess.run(["getent", "group", group], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", group], check=True)
        request_cleanup.append(("group", group))  # removed after the users, by the fixture
    for u in [*users, "llcarol"]:
        if subprocess.run(["id", u], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-M", "-G", group, "-s", "/bin/sh", u], check=True)
            request_cleanup.append(("user", u))
    python = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
    if python is None or subprocess.run(["runuser", "-u", users[0], "--", python, "-c", "pass"]).returncode != 0:
        pytest.skip("no system python3 the test users may run")
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="labelloop-team-"))  # pytest's own tmp folders are private to root
    request_cleanup.append(top)
    os.chmod(top, 0o755)
    base = top / "shared"
    base.mkdir()
    d = project_copy(base)
    for p in [top, *top.parents]:
        if p.stat().st_mode & 0o001 == 0:
            pytest.skip(f"the test users cannot reach {p}")
    os.chmod(base, 0o755)
    cfg = d / "labelloop.toml"  # roles name alice and bob; carol is in the group but not in the project
    cfg.write_text(cfg.read_text().replace("annotators = []", 'annotators = ["llalice", "llbob"]'))
    srv = Server(d, compute="thread", group=group)  # run by root, the project's owner; the folder's group is the team
    srv.start()
    try:
        procs = [
            subprocess.Popen(
                [
                    "runuser",
                    "-u",
                    u,
                    "--",
                    "env",
                    "LOGNAME=root",
                    "USER=root",
                    python,
                    "-c",
                    RAW_CLIENT,
                    str(d / SOCKET_NAME),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for u in users
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert sorted(o[0].strip() for o in outs) == users
        # carol reaches the socket (same group) but is not a member: one sentence, and a denied event
        r = subprocess.run(
            ["runuser", "-u", "llcarol", "--", python, "-c", RAW_CLIENT, str(d / SOCKET_NAME)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "unknown_user: llcarol is not a member of this project" in r.stderr
        # someone outside the group cannot connect at all
        r = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                python,
                "-c",
                f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(d / SOCKET_NAME)!r})",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "Permission denied" in r.stderr
    finally:
        srv.stop()
    evs = _events(d, "kind <> 'denied'")
    assert [e["actor"] for e in _events(d, "kind = 'denied'")] == ["llcarol"]
    assert sorted({e["actor"] for e in evs}) == users and len(evs) == 10
    assert len({e["item_id"] for e in evs}) == 10  # nobody got the other's item


# -- the optional TCP listener, and a short team load through it ------------------------------------------
def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Tcp:
    def __init__(self, port: int):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.f = self.s.makefile("rb")
        assert "hello" in json.loads(self.f.readline())

    def call(self, op: str, **args) -> dict:
        self.s.sendall((json.dumps({"id": 1, "op": op, "args": args}) + "\n").encode())
        return json.loads(self.f.readline())


def test_tcp_listener_is_off_by_default_and_takes_token_users_only(tmp_path):
    d = project_copy(tmp_path)
    r = run_cli("token", "add", str(d), "tess")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    tokens = d / "tokens.json"
    assert oct(tokens.stat().st_mode & 0o777) == "0o600" and token not in tokens.read_text()
    port = _free_port()
    srv = Server(d, compute="thread")  # no --tcp: nothing listens
    srv.start()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    srv.stop()
    srv = Server(d, compute="thread", tcp=("127.0.0.1", port))
    srv.start()
    try:
        c = _Tcp(port)
        assert c.call("next")["error"]["code"] == "unknown_user"  # sign in first
        assert c.call("auth", user="tess", token="wrong")["error"]["code"] == "unknown_user"
        assert c.call("auth", user="root", token=token)["error"]["code"] == "unknown_user"  # tess's token only
        assert c.call("auth", user="tess", token=token)["data"]["actor"] == "tess"
        item = c.call("next")["data"]["item"]
        ans = c.call(
            "decide", item_id=item["item_id"], action="label", labels=[TRUTH[item["item_id"]]], msg_id=uuid.uuid4().hex
        )
        assert ans["ok"]
        assert c.call("export", path=str(tmp_path / "x.parquet"))["error"]["code"] == "bad_request"  # no files
    finally:
        srv.stop()
    assert [(e["actor"], e["item_id"]) for e in _events(d)] == [("tess", item["item_id"])]


def test_a_short_team_load_loses_nothing_and_never_over_assigns(tmp_path):
    """Eight people (token users over TCP, so no root is needed) label for a few seconds at full speed
    with overlap on; the store is read back. bench/bench_team.py runs the full 22-person, 60 s version."""
    import threading

    d = project_copy(tmp_path)
    cfg = d / "labelloop.toml"
    cfg.write_text(
        cfg.read_text()
        .replace("overlap_share = 0.0", "overlap_share = 0.3")
        .replace("retrain_every = 0", "retrain_every = 20")
    )
    from labelloop.core.api.server import add_token

    users = [f"u{i}" for i in range(8)]
    tokens = {u: add_token(d, u) for u in users}
    port = _free_port()
    srv = Server(d, compute="thread", tcp=("127.0.0.1", port))
    srv.start()
    acked: dict[str, list[str]] = {u: [] for u in users}
    errors: list = []

    def person(u: str) -> None:
        try:
            c = _Tcp(port)
            c.call("auth", user=u, token=tokens[u])
            end = time.monotonic() + 4
            item = c.call("next")["data"]["item"]
            while time.monotonic() < end:
                if item is None:
                    time.sleep(0.1)
                    item = c.call("next")["data"]["item"]
                    continue
                msg = uuid.uuid4().hex
                ans = c.call(
                    "decide", item_id=item["item_id"], action="label", labels=[TRUTH[item["item_id"]]], msg_id=msg
                )
                if not ans["ok"]:
                    errors.append(ans["error"])
                    item = c.call("next")["data"]["item"]
                    continue
                acked[u].append(msg)
                item = ans["data"]["item"]
        except Exception as exc:  # pragma: no cover - reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=person, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    srv.stop()
    assert not errors, errors[:3]
    from labelloop.core.api.assign import overlap_need

    with Project.open(d) as p:
        rows = p.store.rows("SELECT client_msg_id, item_id, actor FROM event_log WHERE client_msg_id IS NOT NULL")
        retrains = p.store.scalar("SELECT count(*) FROM models")
    stored = {m for m, _i, _a in rows}
    sent = {m for ms in acked.values() for m in ms}
    assert len(sent) > 100 and sent == stored and len(rows) == len(stored)  # nothing lost, nothing twice
    per_item: dict = {}
    for _m, item_id, actor in rows:
        per_item.setdefault(item_id, []).append(actor)
    assert all(len(a) == len(set(a)) for a in per_item.values())  # nobody twice on an item
    assert all(len(a) <= overlap_need(i, 0.3, 2) for i, a in per_item.items())  # never above the needed count
    assert sum(len(a) == 2 for a in per_item.values()) > 5 and retrains > 2


def test_a_decision_in_hand_survives_a_server_restart(tmp_path):
    """Leases live in the server's memory; the item an annotator holds carries the server's keyed proof,
    so the decision they send after a restart is stored (once), while an item nobody handed them, or
    a forged proof, is still refused."""
    from labelloop.core.api.workspace import Workspace

    d = project_copy(tmp_path)
    srv = Server(d, compute="thread")
    srv.start()
    ws = Workspace(d)
    first = ws.current()
    ws.label(first, [TRUTH[first.item_id]])
    held = ws.current()
    srv.stop()  # (kill -9 loses the same: the leases)
    srv = Server(d, compute="thread")
    srv.start()
    try:
        ws.label(held, [TRUTH[held.item_id]])  # reconnects, resends, proves the lease
        assert ws.progress().done_session == 2  # the session carried on, its count read from the store
        raw = SocketClient(d / SOCKET_NAME)
        other = [i for i in raw.call("next_items", n=50)["items"] if i["item_id"] not in (first.item_id, held.item_id)]
        with pytest.raises(ApiError) as e:
            raw.call(
                "decide",
                item_id=other[-1]["item_id"],
                action="label",
                labels=["ham"],
                msg_id=uuid.uuid4().hex,
                lease="0" * 32,
            )
        assert e.value.code == "not_leased"
        raw.close()
        ws.close()
    finally:
        srv.stop()
    assert [e["item_id"] for e in _events(d)] == [first.item_id, held.item_id]
    key = d / "cache" / "lease.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
