"""The layer rules in pyproject.toml ([tool.importlinter]) hold: the workstation and the CLI use the
project API only; the engine and the features know arrays, not the store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _lint(config: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    return subprocess.run([*cmd, str(config), "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_the_layer_contracts_are_kept():
    r = _lint(ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_a_workstation_module_that_opens_the_store_breaks_a_contract(tmp_path):
    """The check can fail: the same contracts against a copy of the package where the CLI imports
    the store directly."""
    pkg = tmp_path / "src"
    shutil.copytree(ROOT / "core", pkg / "labelloop" / "core")
    shutil.copytree(ROOT / "tui", pkg / "labelloop" / "tui")
    # labelloop stays a namespace package, as installed
    cli = pkg / "labelloop" / "tui" / "cli.py"
    cli.write_text(cli.read_text() + "\nfrom labelloop.core.store import Store  # noqa\n")
    cfg = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    cfg.write_text(text[text.index("\n[tool.importlinter]\n"):])
    exe = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(exe), str(cfg), "--no-cache"], capture_output=True, text=True, cwd=pkg, timeout=300,
                       env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "BROKEN" in r.stdout and "labelloop.tui.cli -> labelloop.core.store" in r.stdout


def test_sql_lives_in_the_store_package():
    """Every query of the project database is in core/store/ (one module per concern: the schema and
    events, imports, exports, a round's reads and writes, the status and metrics read models).
    simulate.py is the one other DuckDB user: it reads the user's labelled file in a private
    in-memory database and never opens a project."""
    import re
    sql = re.compile(r"\.(rows|dicts|scalar|execute|sql)\(")
    offenders = []
    for path in (ROOT / "core").glob("*.py"):
        if path.name == "simulate.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if sql.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.name}:{n}: {line.strip()[:80]}")
    assert offenders == []
    assert {p.stem for p in (ROOT / "core" / "store").glob("*.py")} >= {"__init__", "imports", "exports", "rounds",
                                                                         "reports"}
