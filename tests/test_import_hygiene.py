"""core/ must never import Textual or Rich (ARCHITECTURE: layers point down only)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_core_imports_no_textual():
    modules = sorted(
        ".".join(p.relative_to(ROOT / "core").with_suffix("").parts)
        for p in (ROOT / "core").rglob("*.py")
        if p.stem != "__init__"
    )
    assert len(modules) >= 8
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module('labelloop.core.' + m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'tui', 'textual_plotext'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"core pulled in UI modules: {out.stdout}"


def test_core_source_never_imports_ui_modules():
    # (Rich itself can be loaded by scikit-learn, so the subprocess check above cannot ban it;
    # this one checks that core's own code never imports it, nor Textual or tui.)
    import re

    pattern = re.compile(r"^\s*(from|import)\s+(textual|rich|tui|textual_plotext)\b", re.M)
    offenders = [p.name for p in (ROOT / "core").rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_headless_cli_does_not_import_textual():
    code = "import sys\nfrom tui import cli\ncli.build_parser()\nprint('textual' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
