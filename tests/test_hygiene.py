"""The house rules CI guards besides the tests: ruff (lint and format) and no dead code (vulture)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_ruff_lint_and_format_are_clean():
    lint = _run(str(BIN / "ruff"), "check", "core", "tui", "tests", "bench")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-1000:]
    fmt = _run(str(BIN / "ruff"), "format", "--check", "core", "tui", "tests", "bench")
    assert fmt.returncode == 0, fmt.stdout[-3000:] + fmt.stderr[-1000:]


def test_vulture_finds_no_dead_code():
    r = _run(str(BIN / "vulture"), "core", "tui", "tests/vulture_whitelist.py", "--min-confidence", "60")
    assert r.returncode == 0, r.stdout[-3000:]


def test_no_function_is_longer_than_80_lines_without_its_reason():
    """A function over 80 lines says why in its docstring ("Long because ...")."""
    import ast

    long = []
    for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "tui").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                if "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                        f"({node.end_lineno - node.lineno + 1} lines)"
                    )
    assert long == []
