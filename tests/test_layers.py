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


def _lint_planted(tmp_path, module: str, line: str) -> subprocess.CompletedProcess:
    """The project's contracts against a copy of the package with one import line planted in ``module``
    (a path under the copy's labelloop/ folder)."""
    pkg = tmp_path / "src"
    shutil.copytree(ROOT / "core", pkg / "labelloop" / "core")
    shutil.copytree(ROOT / "tui", pkg / "labelloop" / "tui")
    # labelloop stays a namespace package, as installed
    target = pkg / "labelloop" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    cfg = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    cfg.write_text(text[text.index("\n[tool.importlinter]\n") :])
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(exe), str(cfg), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=pkg,
        timeout=300,
        env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin"},
    )


def test_a_workstation_module_that_opens_the_store_breaks_a_contract(tmp_path):
    """The check can fail: the CLI importing the store directly breaks the API-only contract."""
    r = _lint_planted(tmp_path, "tui/cli.py", "from labelloop.core.store import Store")
    assert r.returncode == 1 and "BROKEN" in r.stdout and "labelloop.tui.cli -> labelloop.core.store" in r.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    """The engine importing the assignment of the API (three layers up) breaks the layers contract, and
    so does the bottom layer importing the engine."""
    r = _lint_planted(tmp_path, "core/engine/model.py", "from labelloop.core.api.assign import Assignment")
    assert r.returncode == 1
    assert "Layers: tui > api" in r.stdout and "BROKEN" in r.stdout
    assert "labelloop.core.engine.model -> labelloop.core.api.assign" in r.stdout
    r = _lint_planted(tmp_path / "second", "core/util/faults.py", "import labelloop.core.engine.model")
    assert r.returncode == 1 and "labelloop.core.util.faults -> labelloop.core.engine.model" in r.stdout


def test_sql_lives_in_the_store_package():
    """Every query of the project database is in core/store/ (one module per concern: the schema and
    events, imports, exports, a round's reads and writes, the status and metrics read models).
    simulate.py is the one other DuckDB user: it reads the user's labelled file in a private
    in-memory database and never opens a project."""
    import re

    sql = re.compile(r"\.(rows|dicts|scalar|execute|sql)\(")
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        if path.name == "simulate.py" or "store" in path.relative_to(ROOT / "core").parts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if sql.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert offenders == []
    assert {p.stem for p in (ROOT / "core" / "store").glob("*.py")} >= {
        "__init__",
        "imports",
        "exports",
        "rounds",
        "reports",
    }
