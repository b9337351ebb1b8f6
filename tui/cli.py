"""The ``labelloop`` command. Headless commands never import Textual."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

EXIT_BAD_INPUT = 2


def _project(path: str, read_only: bool = False):
    from core.project import Project
    return Project.open(path, read_only=read_only)


def cmd_init(args) -> int:
    from core.project import init_project, parse_labels
    labels = parse_labels(args.labels)
    path = init_project(args.dir, labels, multi_label=args.multi_label, name=args.name)
    print(f"Created project {path} with labels {', '.join(labels)}.")
    print(f"Next: labelloop import {path} FILE --text-col text   (then: labelloop label {path})")
    return 0


def cmd_import(args) -> int:
    from core.importer import import_file
    meta = None if args.meta_cols is None else [c.strip() for c in args.meta_cols.split(",") if c.strip()]
    with _project(args.dir) as project:
        r = import_file(project, args.file, text_col=args.text_col, id_col=args.id_col, label_col=args.label_col,
                        split_col=args.split_col, meta_cols=meta, skip_invalid=args.skip_invalid,
                        label_sep=args.label_sep)
    splits = ", ".join(f"{k} {v:,}" for k, v in r.splits.items()) or "none"
    print(f"Imported {r.rows_imported:,} of {r.rows_read:,} rows from {r.source} ({splits}; {r.labelled:,} with labels) in {r.seconds:.2f} s.")
    if r.rows_rejected:
        print(f"Rejected {r.rows_rejected:,} rows; reasons in {r.rejects_file}.")
    return 0


def cmd_export(args) -> int:
    from core.exporter import export_parquet
    with _project(args.dir) as project:
        r = export_parquet(project, args.out, what=args.what)
    print(f"Wrote {r.rows:,} rows ({r.what}) to {r.path} in {r.seconds:.2f} s.")
    return 0


def cmd_status(args) -> int:
    from core.status import format_status, project_status
    with _project(args.dir) as project:
        st = project_status(project)
    print(json.dumps(st, indent=2, default=str) if args.json else format_status(st))
    return 0


def cmd_demo(args) -> int:
    from core.demo import build_demo
    path, created = build_demo(args.dir)
    print(("Built" if created else "Opening existing") + f" demo project {path}.", file=sys.stderr)
    if args.no_open:
        return 0
    return _open_app(path, args)


def cmd_label(args) -> int:
    return _open_app(Path(args.dir), args)


def _open_app(path: Path, args) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        from core.errors import LabelloopError
        raise LabelloopError("the workstation needs a terminal; run it in an interactive shell (or over ssh -t).")
    from tui.app import run_app  # Textual is imported only here
    return run_app(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labelloop", description="Active learning and human-in-the-loop annotation in the terminal.")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", help="create a project folder")
    s.add_argument("dir")
    s.add_argument("--labels", required=True, help="comma-separated label names, e.g. spam,ham")
    s.add_argument("--multi-label", action="store_true", help="items may carry several labels")
    s.add_argument("--name", help="project name (default: the folder name)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("import", help="import items from CSV, TSV, JSONL or Parquet")
    s.add_argument("dir")
    s.add_argument("file")
    s.add_argument("--text-col", default="text")
    s.add_argument("--id-col", help="column with unique item ids (default: file name and row)")
    s.add_argument("--label-col", help="column with existing labels (imported as pre-labelled)")
    s.add_argument("--split-col", help="column with pool/train, test or gold (default: everything is pool)")
    s.add_argument("--meta-cols", help="comma-separated metadata columns (default: every other column)")
    s.add_argument("--label-sep", default="|", help="separator of several labels in one cell (multi-label)")
    s.add_argument("--skip-invalid", action="store_true", help="import the valid rows, write rejected ones beside the input")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="export final labels with provenance (or the event log) to Parquet")
    s.add_argument("dir")
    s.add_argument("out")
    s.add_argument("--what", choices=["final", "events"], default="final")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("status", help="counts, annotators, queue and the latest model")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("demo", help="build the sample SMS spam project and open it")
    s.add_argument("dir", nargs="?", default="labelloop-demo")
    s.add_argument("--no-open", action="store_true", help="build the project only")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("label", help="open the annotator's workstation")
    s.add_argument("dir")
    s.set_defaults(func=cmd_label)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from core.errors import LabelloopError
    try:
        return args.func(args) or 0
    except LabelloopError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"labelloop: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("labelloop: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected fault: one sentence unless --debug
        if args.debug or os.environ.get("LABELLOOP_DEBUG"):
            traceback.print_exc()
        print(f"labelloop: unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(run with --debug for the traceback).", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
