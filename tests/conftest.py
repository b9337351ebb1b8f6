from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"

from labelloop.core.store.project import Project, init_project  # noqa: E402


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return init_project(tmp_path / "proj", ["ham", "spam"])


@pytest.fixture
def project(project_dir: Path):
    p = Project.open(project_dir)
    yield p
    p.close()


def write_csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def store_fingerprint(project: Project) -> tuple:
    """Everything an import may touch: if this is equal, nothing was written."""
    s = project.store
    return (
        s.scalar("SELECT count(*) FROM items"),
        s.scalar("SELECT count(*) FROM events"),
        s.scalar("SELECT count(*) FROM imports"),
        s.rows("SELECT id, text, split FROM items ORDER BY ord"),
    )


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labelloop.tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


@pytest.fixture(params=["in-process", "socket"])
def open_app(request):
    """The workstation over either transport: the project in this process (as alice), or a
    ``labelloop serve`` server for the project (as the OS user, whom the socket names)."""
    servers = {}

    def make(d, **kw):
        from labelloop.core.api.server import Server
        from labelloop.tui.app import LabelApp

        if request.param == "socket":
            if d not in servers:
                servers[d] = Server(d, compute="thread")
                servers[d].start()
            return LabelApp(d, **kw)
        return LabelApp(d, actor="alice", **kw)

    from labelloop.core.store.project import current_actor

    make.actor = "alice" if request.param == "in-process" else current_actor()
    make.transport = request.param
    yield make
    for srv in servers.values():
        srv.stop()
