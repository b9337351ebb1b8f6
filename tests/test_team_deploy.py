"""Team mode deployed as the README says (``labelloop serve DIR --group TEAM``), attacked by a real
member of the team with a shell on the same machine. Each attack on the folder is refused by the
operating system, the victim file is unchanged, and the server keeps answering a legitimate client.

These tests create OS users and a group and remove them afterwards. They run as root where
``useradd`` and ``runuser`` exist, and only when asked (CI sets ``CI``; elsewhere set
``LABELLOOP_OS_USERS=1``), so that a developer's machine is never changed by surprise."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from labelloop.core.api.client import SocketClient
from labelloop.core.api.protocol import SOCKET_NAME, ApiError
from labelloop.core.api.server import Server
from labelloop.core.store.project import current_actor
from tests.tui_helpers import TRUTH, project_copy

SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
ALLOWED = (
    os.geteuid() == 0
    and all(shutil.which(t) for t in ("useradd", "userdel", "groupadd", "groupdel", "runuser"))
    and SYSTEM_PYTHON is not None
    and bool(os.environ.get("CI") or os.environ.get("LABELLOOP_OS_USERS"))
)
pytestmark = [
    pytest.mark.skipif(not ALLOWED, reason="creates OS users: root, CI or LABELLOOP_OS_USERS=1"),
    # one worker for the whole module: the users fixture creates and removes the OS users, and another
    # worker removing them in the middle of a test here made the member lose the team's group
    pytest.mark.xdist_group("os_users"),
]

GROUP, MEMBER, OUTSIDER = "lldeploy", "llmallory", "lloutsider"


@pytest.fixture(scope="module")
def users():
    made = []
    if subprocess.run(["getent", "group", GROUP], capture_output=True).returncode != 0:
        subprocess.run(["groupadd", GROUP], check=True)
        made.append(("group", GROUP))
    for user, groups in ((MEMBER, [GROUP]), (OUTSIDER, [])):
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(
                ["useradd", "-M", "-s", "/bin/sh", *(["-G", ",".join(groups)] if groups else []), user], check=True
            )
            made.append(("user", user))
        elif groups:  # a user left by an interrupted run: make sure of its membership
            subprocess.run(["usermod", "-a", "-G", ",".join(groups), user], check=True)
    yield
    import time

    for kind in ("user", "group"):
        for k, name in made:
            if k != kind:
                continue
            for _ in range(20):  # userdel refuses while a process of the user lives (a killed runuser's child)
                if kind == "user":
                    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
                if subprocess.run([f"{kind}del", name], capture_output=True).returncode in (0, 6):
                    break
                time.sleep(0.25)
            assert (
                subprocess.run(
                    ["id" if kind == "user" else "getent", *([] if kind == "user" else ["group"]), name],
                    capture_output=True,
                ).returncode
                != 0
            ), f"the test {kind} {name} was not removed"


@pytest.fixture
def deployed(users):
    """A project served as the README says: `labelloop serve DIR --group TEAM` by its owner (root)."""
    top = Path(tempfile.mkdtemp(prefix="labelloop-deploy-"))
    os.chmod(top, 0o755)
    d = project_copy(top)
    (d / "tokens.json").write_text("{}")
    os.chmod(d / "tokens.json", 0o600)
    logged = []
    srv = Server(d, compute="thread", group=GROUP, log=logged.append)
    srv.start()
    yield d, srv, logged
    srv.stop()
    shutil.rmtree(top, ignore_errors=True)


ATTACKS = r"""
import json, os, shutil, socket, sys
d = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "succeeded"
    except OSError as e:
        out[name] = "denied: " + (e.strerror or str(e))
def fake_server():
    os.rename(d + "/run/labelloop.sock", d + "/run/moved.sock")
def plant_wal():
    os.symlink("/etc/passwd", d + "/project.duckdb.wal")
def guidelines_link():
    os.unlink(d + "/guidelines.md"); os.symlink("/etc/shadow", d + "/guidelines.md")
attempt("copy the database", lambda: shutil.copy(d + "/project.duckdb", "/tmp/stolen.duckdb"))
attempt("read the config", lambda: open(d + "/labelloop.toml").read())
attempt("move the database away", lambda: os.rename(d + "/project.duckdb", d + "/gone.duckdb"))
attempt("rewrite the config", lambda: open(d + "/labelloop.toml", "a").write("\n# admin\n"))
attempt("replace the guidelines with a link", guidelines_link)
attempt("replace the lease key", lambda: open(d + "/cache/lease.key", "wb").write(b"x" * 32))
attempt("plant a link at the WAL", plant_wal)
attempt("replace the tokens", lambda: open(d + "/tokens.json", "w").write('{"root": "x"}'))
attempt("rename the socket for a fake server", fake_server)
attempt("list the project folder", lambda: os.listdir(d))
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(d + "/run/labelloop.sock"); out["reach the socket"] = "succeeded"
except OSError as e:
    out["reach the socket"] = "denied: " + (e.strerror or str(e))
print(json.dumps(out))
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_as(user: str, code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", user, "--", SYSTEM_PYTHON, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_serve_with_a_group_sets_the_modes_and_says_what_it_changed(deployed):
    d, _srv, logged = deployed
    import grp
    import stat

    gid = grp.getgrnam(GROUP).gr_gid
    assert stat.S_IMODE(d.stat().st_mode) == 0o710 and d.stat().st_gid == gid
    run = d / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o2750 and run.stat().st_gid == gid
    sock = d / SOCKET_NAME
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660 and sock.stat().st_gid == gid
    for p in [*d.rglob("*")]:
        if p.parent == run or p == run:
            continue
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    assert any("mode 0710" in m for m in logged)


def test_a_team_member_reaches_the_socket_and_nothing_else(deployed):
    d, srv, _logged = deployed
    c = SocketClient(d / SOCKET_NAME)
    item = c.call("next")["item"]  # (the lease key exists from the first item on)
    victims = ["project.duckdb", "labelloop.toml", "guidelines.md", "cache/lease.key", "tokens.json"]
    before = {v: _digest(d / v) for v in victims}
    r = _run_as(MEMBER, ATTACKS, str(d))
    assert r.returncode == 0, r.stderr
    outcome = json.loads(r.stdout)
    assert outcome.pop("reach the socket") == "succeeded"
    assert all(v.startswith("denied") for v in outcome.values()), outcome
    assert {v: _digest(d / v) for v in victims} == before
    assert not (d / "project.duckdb.wal").is_symlink() and not Path("/tmp/stolen.duckdb").exists()
    c.call("decide", item_id=item["item_id"], action="label", labels=[TRUTH[item["item_id"]]], msg_id="m" * 12)
    assert c.call("ping")["actor"] == current_actor()
    c.close()


def test_someone_outside_the_team_cannot_even_reach_the_socket(deployed):
    d, _srv, _logged = deployed
    r = _run_as(OUTSIDER, ATTACKS, str(d))
    assert r.returncode == 0, r.stderr
    outcome = json.loads(r.stdout)
    assert all(v.startswith("denied") for v in outcome.values()), outcome


def test_the_old_shared_folder_setup_is_refused_with_the_command_that_fixes_it(users, tmp_path):
    d = project_copy(tmp_path)
    shutil.chown(d, group=GROUP)
    os.chmod(d, 0o2770)  # wave 2's README: the team could write it
    with pytest.raises(Exception) as e:
        Server(d, compute="thread")
    msg = str(e.value)
    assert "writable by its group (mode 2770)" in msg and "--group" in msg and "\n" not in msg


FAKE_SERVER = r"""
import json, os, socket, sys, time
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX); s.bind(path); os.chmod(path, 0o777); s.listen(4)
print("ready", flush=True)
conn, _ = s.accept()
conn.sendall(json.dumps({"hello": {"protocol": 2, "labelloop": "0.1.0", "server_user": "root",
                                   "server_uid": 0, "project": "x"}}).encode() + b"\n")
got = conn.recv(65536)
open(sys.argv[2], "wb").write(got)
time.sleep(2)
"""


def test_a_client_refuses_a_socket_served_by_anyone_but_the_projects_owner(users):
    """Even where a fake server got its socket in place, the client checks the peer's uid (it says it
    is root in its hello: the kernel says otherwise) and sends nothing."""
    top = Path(tempfile.mkdtemp(prefix="labelloop-fake-"))  # a place the attacker can reach
    os.chmod(top, 0o755)
    d = top / "proj"
    (d / "run").mkdir(parents=True)
    os.chmod(d, 0o755)
    shutil.chown(d / "run", user=MEMBER)  # a folder the attacker could write
    fake = subprocess.Popen(
        [
            "runuser",
            "-u",
            MEMBER,
            "--",
            SYSTEM_PYTHON,
            "-c",
            FAKE_SERVER,
            str(d / SOCKET_NAME),
            "/tmp/labelloop-fake-got",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout.readline().strip() == "ready"
        with pytest.raises(ApiError) as e:
            SocketClient(d / SOCKET_NAME, reconnect_seconds=0)  # d belongs to root: root must serve it
        assert e.value.code == "untrusted" and MEMBER in e.value.message
    finally:
        fake.kill()
        fake.wait()
    leaked = Path("/tmp/labelloop-fake-got")
    assert not leaked.exists() or leaked.read_bytes() == b""
    leaked.unlink(missing_ok=True)
    shutil.rmtree(top, ignore_errors=True)


def _readme_install_lines() -> list[str]:
    """The install commands of the README's team section, as written there."""
    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Team mode") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    lines, started = [], False
    for line in block.splitlines():
        if line.startswith("# once, on the lab server"):
            started = True
            continue
        if started and line.startswith("#"):
            continue
        if started and not line.strip():
            break
        if started:
            lines.append(line.split("  #")[0].strip())
    return lines


def test_the_readmes_team_install_works_for_an_annotator_whatever_python_root_uses(users, deployed, tmp_path):
    """The README's install, run as written (sudo dropped: this runs as root; the prefix made unique so
    that a developer's /opt/labelloop is never touched), from this checkout: an annotator (a real OS
    user, no home directory) runs the installed labelloop against the served project. The test's own
    Python may live under /root (pyenv): the install does not use it."""
    import uuid

    from tests.conftest import ROOT

    d, _srv, _logged = deployed
    lines = _readme_install_lines()
    assert any("-m venv /opt/labelloop" in ln for ln in lines) and any("pip install" in ln for ln in lines), lines
    prefix = f"/opt/labelloop-test-{uuid.uuid4().hex[:8]}"
    link = f"/usr/local/bin/labelloop-test-{uuid.uuid4().hex[:8]}"
    try:
        for line in lines:
            cmd = line.removeprefix("sudo ").replace("/usr/local/bin/labelloop", link)
            cmd = cmd.replace("/opt/labelloop", prefix)
            if cmd.startswith("apt-get") and not shutil.which("apt-get"):
                continue
            r = subprocess.run(cmd, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        cfg = Path(prefix, "pyvenv.cfg").read_text()
        assert "home = /usr/bin" in cfg, cfg
        r = subprocess.run(
            ["runuser", "-u", MEMBER, "--", link, "status", str(d)], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        assert "labelled" in r.stdout.lower() or "items" in r.stdout.lower(), r.stdout
        r = subprocess.run(
            ["runuser", "-u", MEMBER, "--", link, "--version"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and "labelloop" in r.stdout, r.stdout + r.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
        Path(link).unlink(missing_ok=True)
