"""The ``labelloop`` command. Headless commands never import Textual."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from labelloop.core.util.textsafe import safe_json, safe_line

EXIT_BAD_INPUT = 2
EXIT_STORE_FAILED = 3


def say(text: str = "", *, file=None) -> None:
    """Print text that may hold ids, labels, split names or texts from data files: every control
    character is made visible (core/util/textsafe.py), so nothing reaches the terminal as a sequence."""
    from labelloop.core.util.textsafe import clean

    print(clean(text), file=file or sys.stdout)


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _client(path: str, compute: str = "thread"):
    """The project API: through the project's server when one runs, else in this process."""
    from labelloop.core.api.client import connect

    return connect(path, compute=compute)


def cmd_init(args) -> int:
    from labelloop.core.api.offline import create_project

    path, labels = create_project(args.dir, args.labels, multi_label=args.multi_label, name=args.name)
    say(f"Created project {path} with labels {', '.join(labels)}.")
    say(f"Next: labelloop import {path} FILE --text-col text   (then: labelloop label {path})")
    return 0


def _import_external(args) -> int:
    from labelloop.core.util.errors import LabelloopError

    if args.external and not args.file:
        raise LabelloopError("name the folder of Parquet files: labelloop import DIR FOLDER --external")
    with _client(args.dir) as client:
        r = client.call(
            "pool_register",
            folder=str(Path(args.file).resolve()) if args.file else None,
            id_col=args.id_col or "id",
            text_col=args.text_col,
            refresh=args.refresh,
        )
    for line in r["lines"]:
        say(line)
    for line in r["skipped"]:
        say(f"skipped: {line}")
    say(
        f"External pool: {r['items']:,} items in {r['files']} file(s) at {r['folder']}; {r['built']} partition(s) "
        f"featurised {r['compute']} in {r['seconds']:.1f} s."
    )
    return 0


def cmd_import(args) -> int:
    from labelloop.core.api.client import SocketClient
    from labelloop.core.util.errors import InputFileError, LabelloopError

    if args.external or args.refresh:
        return _import_external(args)
    if not args.file:
        raise LabelloopError("name the file to import: labelloop import DIR FILE")
    meta = None if args.meta_cols is None else [c.strip() for c in args.meta_cols.split(",") if c.strip()]
    opts = dict(
        text_col=args.text_col,
        id_col=args.id_col,
        label_col=args.label_col,
        split_col=args.split_col,
        meta_cols=meta,
        skip_invalid=args.skip_invalid,
        label_sep=args.label_sep,
        dedupe=args.dedupe,
    )
    with _client(args.dir) as client:
        if isinstance(client, SocketClient):
            # the server reads the file through a descriptor opened here, with this user's rights
            if args.rejects:
                raise LabelloopError(
                    "--rejects is not available while the project's server runs (the server "
                    "writes rejected rows into the project folder and says where)"
                )
            try:
                f = open(args.file, "rb")
            except FileNotFoundError:
                raise InputFileError(f"{args.file} does not exist.") from None
            with f:
                r = client.call("import", _fds=[f.fileno()], source_name=str(Path(args.file).resolve()), **opts)
        else:
            r = client.call("import", path=args.file, rejects=args.rejects, **opts)
    splits = ", ".join(f"{k} {v:,}" for k, v in r["splits"].items()) or "none"
    say(
        f"Imported {r['rows_imported']:,} of {r['rows_read']:,} rows from {r['source']} ({splits}; "
        f"{r['labelled']:,} with labels) in {r['seconds']:.2f} s."
    )
    if r["rows_rejected"]:
        say(f"Rejected {r['rows_rejected']:,} rows; reasons in {r['rejects_file']}.")
    for line in r["duplicate_lines"]:
        say(line)
    return 0


def cmd_export(args) -> int:
    from labelloop.core.api.client import SocketClient

    with _client(args.dir) as client:
        if isinstance(client, SocketClient):
            r = _export_through_server(client, Path(args.out), args.what)
        else:
            r = client.call("export", path=args.out, what=args.what)
    say(f"Wrote {r['rows']:,} rows ({r['what']}) to {args.out} in {r['seconds']:.2f} s.")
    return 0


def _export_through_server(client, out: Path, what: str) -> dict:
    from labelloop.core.util.errors import LabelloopError

    if out.suffix.lower() not in (".parquet", ".pq"):
        raise LabelloopError(f"{out}: the export is Parquet; name the file .parquet.")
    return _write_through_server(client, "export", out, what=what)


def _write_through_server(client, op: str, out: Path, **args) -> dict:
    """The server writes into a file created here (this user's rights, this user's folder), which is
    then renamed over ``out``: the server never opens a path a client names."""
    from labelloop.core.util.errors import LabelloopError
    from labelloop.core.util.safeio import atomic_write

    if not out.parent.exists():
        raise LabelloopError(f"{out.parent} does not exist; create the folder first.")
    if out.is_dir():
        raise LabelloopError(f"{out} is a folder; name a file.")
    answer: list[dict] = []
    atomic_write(out, lambda f: answer.append(client.call(op, _fds=[f.fileno()], path=str(out), **args)))
    return answer[0]


def cmd_status(args) -> int:
    from labelloop.core.text.status import format_status

    with _client(args.dir) as client:
        st = client.call("status")
    print(safe_json(st, indent=2, default=str)) if args.json else say(format_status(st))
    return 0


def cmd_check(args) -> int:
    from labelloop.core.text.status import format_readiness

    with _client(args.dir) as client:
        r = client.call("check")
    print(safe_json(r, indent=2, default=str)) if args.json else say(format_readiness(r))
    failed = [c for c in r["checks"] if c["status"] == "fail"]
    return 1 if failed else 0


def cmd_report(args) -> int:
    from labelloop.core.text.report import write_report
    from labelloop.core.util.errors import LabelloopError

    out = Path(args.out)
    if out.suffix.lower() in (".html", ".htm") or (out.exists() and not out.is_dir()):
        raise LabelloopError(
            f"--out {out} must name a folder: report.html and every figure as CSV are written inside it "
            f"(e.g. --out {out.with_suffix('') if out.suffix else out}-report)"
        )

    with _client(args.dir) as client:
        r = client.call("check")
    page = write_report(r, Path(args.out))
    say(f"Report: {page} (with every figure as CSV beside it in {Path(args.out)}).")
    return 0


def cmd_train(args) -> int:
    from labelloop.core.api.client import retrain_and_wait
    from labelloop.core.api.workspace import Report

    with _client(args.dir) as client:
        opts = {
            k: v for k, v in (("strategy", args.strategy), ("batch", args.batch), ("seed", args.seed)) if v is not None
        }
        job = retrain_and_wait(client, "labelloop train", timeout=24 * 3600, poll_seconds=0.1, **opts)
    r = Report(job["report"])
    if args.json:
        print(safe_json(dict(r), indent=2, default=str))
        return 0
    if r.metrics:
        m = r.metrics
        say(f"Model v{r.model_version}: trained on {r.n_train:,} labels in {r.seconds.get('train', 0):.2f} s.")
        if m.get("n_test"):
            base = (
                f" (majority-class baseline {m['majority_baseline']:.3f})"
                if m.get("majority_baseline") is not None
                else ""
            )
            say(
                f"  test (n={m['n_test']:,}): accuracy {m['accuracy']:.3f}{base}, macro-F1 {m['macro_f1']:.3f}, "
                f"ECE {m['ece']:.3f} (uncalibrated {m['ece_uncalibrated']:.3f}), Brier {m['brier']:.3f}, NLL {m['nll']:.3f}"
            )
            for c, pc in m["per_class"].items():
                say(f"    {c:<20} precision {pc['precision']:.3f}  recall {pc['recall']:.3f}  (n={pc['support']})")
    else:
        say(f"No model yet ({r.n_train} labels, need two classes): queued a cold-start batch.")
    ad = r.adequacy
    say(
        "Seed adequacy: "
        + ", ".join(f"{c} {n}" for c, n in ad["per_class"].items())
        + f" (minimum {ad['minimum']} per class)"
    )
    say(f"Queued batch {r.batch_id}: {r.batch_size} items by {r.strategy} in {r.seconds.get('score_select', 0):.2f} s.")
    for note in r.notes:
        say(f"note: {note}")
    for w in r.warnings:
        say(f"warning: {w}")
    return 0


def cmd_next(args) -> int:
    with _client(args.dir) as client:
        items = client.call("next_items", n=args.n)["items"]
    if args.json:
        print(safe_json(items, indent=2, default=str))
        return 0
    if not items:
        say("The queue is empty; run labelloop train to fill it.")
    for it in items:
        why = "random audit" if it["audit"] else it["strategy"]
        if it["rank"] is not None and not it["audit"]:
            why += f", rank {it['rank']}"
        if it["percentile"] is not None:
            why += f", pool percentile {it['percentile']:.1f}"
        probs = it["probs"] or {}
        top = max(probs, key=probs.get) if probs else None
        sugg = f"  suggestion {top} ({probs[top]:.2f})" if top else ""
        say(f"{safe_line(it['item_id'], 40):<14} [{why}]{sugg}\n    {safe_line(it['text'], 150)}")
    return 0


def cmd_simulate(args) -> int:
    from labelloop.core.api.offline import simulate

    options = dict(
        strategies=[s.strip() for s in args.strategies.split(",") if s.strip()],
        seed_size=args.seed_size,
        batch=args.batch,
        budget=args.budget,
        repeats=args.repeats,
        test_frac=args.test_frac,
        seed_query=args.seed_query,
        target_frac=args.target,
        cost_per_label=args.cost_per_label,
        seconds_per_label=args.seconds_per_label,
        compute_price_per_hour=args.compute_price,
        seed=args.seed,
        calibration=args.calibration,
        engineering_cost=args.engineering_cost,
        features=[f.strip() for f in args.features.split(",") if f.strip()],
        targets=args.targets,
        audit_share=args.audit_share,
    )

    def progress(frac, msg):
        if sys.stderr.isatty():
            print(f"\r{frac:5.0%} {msg:<40}", end="", file=sys.stderr, flush=True)

    text = simulate(
        Path(args.data),
        args.text_col,
        args.label_col,
        options,
        split_col=args.split_col,
        curves=Path(args.curves) if args.curves else None,
        chart=Path(args.chart) if args.chart else None,
        progress=progress,
    )
    if sys.stderr.isatty():
        print("\r" + " " * 50 + "\r", end="", file=sys.stderr)
    say(text)
    if args.curves:
        say(f"Curves: {args.curves}")
    if args.chart:
        say(f"Chart: {args.chart}")
    return 0


def cmd_model(args) -> int:
    from labelloop.core.api.client import SocketClient
    from labelloop.core.util.errors import LabelloopError

    with _client(args.dir) as client:
        through_server = isinstance(client, SocketClient)
        if args.action == "export":
            if through_server:
                r = _write_through_server(client, "model_export", Path(args.file), version=args.version)
            else:
                r = client.call("model_export", path=args.file, version=args.version)
            say(f"Exported model v{r['version']} with its featurizer to {args.file}.")
        else:
            if through_server:
                path = Path(args.file)
                if not path.is_file():
                    raise LabelloopError(f"{path} does not exist or is not a file.")
                with open(path, "rb") as f:
                    r = client.call(
                        "model_import", _fds=[f.fileno()], source_name=str(path.resolve()), trust=args.trust
                    )
            else:
                r = client.call("model_import", path=args.file, trust=args.trust)
            say(
                f"Imported {args.file} as model v{r['version']}; it ranks the queue until this project trains its "
                "own (run labelloop train)."
            )
    return 0


def cmd_demo(args) -> int:
    from labelloop.core.api.offline import demo_project

    path, created = demo_project(args.dir)
    say(("Built" if created else "Opening existing") + f" demo project {path}.", file=sys.stderr)
    if args.no_open:
        return 0
    return _open_app(path, args)


def cmd_label(args) -> int:
    return _open_app(Path(args.dir), args)


def _open_app(path: Path, args) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        from labelloop.core.util.errors import LabelloopError

        raise LabelloopError("the workstation needs a terminal; run it in an interactive shell (or over ssh -t).")
    from labelloop.tui.app import run_app  # Textual is imported only here

    return run_app(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labelloop", description="Active learning and human-in-the-loop annotation in the terminal."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    from labelloop.core import __version__

    p.add_argument("--version", action="version", version=f"labelloop {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _project_commands(sub)
    _simulate_command(sub)
    _workstation_and_team_commands(sub)
    return p


def _project_commands(sub) -> None:
    """init, import, export, status, check, report, train, next."""
    s = sub.add_parser("init", help="create a project folder")
    s.add_argument("dir")
    s.add_argument("--labels", required=True, help="comma-separated label names, e.g. spam,ham")
    s.add_argument("--multi-label", action="store_true", help="items may carry several labels")
    s.add_argument("--name", help="project name (default: the folder name)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("import", help="import items from CSV, TSV, JSONL or Parquet")
    s.add_argument("dir")
    s.add_argument("file", nargs="?", help="the file (with --external: a folder of Parquet files)")
    s.add_argument(
        "--external",
        action="store_true",
        help="register a folder of Parquet files (id and text columns) as the pool, without copying it in",
    )
    s.add_argument("--refresh", action="store_true", help="register files added to the external pool's folder")
    s.add_argument("--text-col", default="text")
    s.add_argument("--id-col", help="column with unique item ids (default: file name and row)")
    s.add_argument("--label-col", help="column with existing labels (imported as pre-labelled)")
    s.add_argument("--split-col", help="column with pool/train, test or gold (default: everything is pool)")
    s.add_argument("--meta-cols", help="comma-separated metadata columns (default: every other column)")
    s.add_argument("--label-sep", default="|", help="separator of several labels in one cell (multi-label)")
    s.add_argument(
        "--skip-invalid", action="store_true", help="import the valid rows, write rejected ones beside the input"
    )
    s.add_argument(
        "--rejects", help="with --skip-invalid: where to write the rejected rows (default: FILE.rejected.csv)"
    )
    s.add_argument(
        "--dedupe",
        action="store_true",
        help="drop rows whose exact text is already in the file or the project (the first copy stays; "
        "a pool row that repeats a test or gold text is dropped)",
    )
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

    s = sub.add_parser("check", help="readiness checklist and the six warning signs (exit 1 when a check fails)")
    s.add_argument("dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("report", help="one self-contained HTML page with the charts, checks and warnings")
    s.add_argument("dir")
    s.add_argument("--out", required=True, help="folder for report.html and the figures as CSV")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("train", help="retrain, calibrate, rescore the pool and refill the queue")
    s.add_argument("dir")
    s.add_argument("--strategy", help="override [strategy] name for this batch")
    s.add_argument("--batch", type=positive_int, help="override [strategy] batch_size")
    s.add_argument("--seed", type=int, help="random seed (a fixed seed reproduces the batch)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("next", help="show the next queued items and why each was chosen")
    s.add_argument("dir")
    s.add_argument("--n", type=positive_int, default=20)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_next)


def _share(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return v


def _fractions(text: str) -> tuple:
    """ "0.9,0.95,0.98" -> (0.9, 0.95, 0.98): each above 0 and at most 1."""
    out = []
    for part in text.split(","):
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers like 0.9,0.95,0.98, got {part.strip()!r}") from None
        if not 0 < v <= 1:
            raise argparse.ArgumentTypeError(f"each target is a share of the full-pool accuracy (0 to 1], got {v:g}")
        out.append(v)
    return tuple(sorted(set(out)))


def _simulate_command(sub) -> None:
    """simulate: a replay on a labelled file, no project needed."""
    s = sub.add_parser("simulate", help="replay active learning against random sampling on a labelled file")
    s.add_argument("data")
    s.add_argument("--text-col", default="text")
    s.add_argument("--label-col", default="label")
    s.add_argument("--split-col", help="column whose 'test' rows form the test split (default: --test-frac)")
    s.add_argument("--strategies", default="margin,entropy,random", help="comma-separated, e.g. margin,random,auto")
    s.add_argument(
        "--features",
        default="auto",
        help="comma-separated featurizers to cross with the strategies: tfidf, embed, tfidf+embed, auto",
    )
    s.add_argument("--seed-size", type=positive_int, default=50)
    s.add_argument("--batch", type=positive_int, default=50)
    s.add_argument("--budget", type=positive_int, default=500)
    s.add_argument(
        "--repeats",
        type=positive_int,
        default=10,
        help="repeats (paired: each uses one seed set for every arm); comparisons get intervals over them",
    )
    s.add_argument("--test-frac", type=float, default=0.2)
    s.add_argument("--seed-query", help="regex: seed half the first batch with matching items")
    s.add_argument("--target", type=float, default=0.95, help="target as a share of the full-pool accuracy")
    s.add_argument(
        "--targets",
        type=_fractions,
        default=(0.90, 0.95, 0.98),
        help="targets, as shares of the full-pool accuracy, for labels-to-target and a verdict each (0.9,0.95,0.98)",
    )
    s.add_argument(
        "--audit-share",
        type=_share,
        default=0.0,
        help="strategy auto: a share of each batch drawn at random as more evidence, as a project's "
        "[strategy] audit_share (default 0: no arm has one here)",
    )
    s.add_argument("--calibration", choices=["temperature", "platt", "none"], default="temperature")
    s.add_argument("--cost-per-label", type=float, default=0.10)
    s.add_argument("--seconds-per-label", type=float, default=15.0)
    s.add_argument("--compute-price", type=float, default=0.50, help="money per compute hour")
    s.add_argument(
        "--engineering-cost",
        type=float,
        default=200.0,
        help="fixed money for setting up and running the AL pipeline (counted in the cost condition)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--curves", help="write the learning curves here (.csv or .parquet)")
    s.add_argument("--chart", help="write a PNG chart of the learning curves here")
    s.set_defaults(func=cmd_simulate)


def _workstation_and_team_commands(sub) -> None:
    """model, demo, label, review, serve, token."""
    s = sub.add_parser("model", help="export a trained model or import one as the first scorer")
    s.add_argument("action", choices=["export", "import"])
    s.add_argument("dir")
    s.add_argument("file")
    s.add_argument("--version", type=positive_int, help="model version to export (default: latest trained)")
    s.add_argument(
        "--trust",
        action="store_true",
        help="import a pickle model file from an older labelloop: only for a file you made or trust, "
        "since loading a pickle can run any code",
    )
    s.set_defaults(func=cmd_model)

    s = sub.add_parser("demo", help="build the sample SMS spam project and open it")
    s.add_argument("dir", nargs="?", default="labelloop-demo")
    s.add_argument("--no-open", action="store_true", help="build the project only")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("label", help="open the annotator's workstation")
    s.add_argument("dir")
    s.set_defaults(func=cmd_label)

    s = sub.add_parser("review", help="the reviewer's screen: adjudicate disagreements, model dissent and flags")
    s.add_argument("dir")
    s.set_defaults(func=cmd_review)

    s = sub.add_parser("serve", help="serve the project to several annotators (a Unix socket in the folder)")
    s.add_argument("dir")
    s.add_argument(
        "--group",
        help="the team's OS group: the folder becomes the server's alone and the socket (DIR/run/) the group's; "
        "prints what it changed",
    )
    s.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP for users with tokens (off by default)")
    s.add_argument(
        "--train-in-thread", action="store_true", help="train in a thread of the server instead of a separate process"
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("doctor", help="check the project folder as serve does before it starts (modes, owners, links)")
    s.add_argument("dir")
    s.add_argument("--group", help="check the layout serve --group GROUP sets")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("config", help="change a setting through the server (admins), logged as an event")
    s.add_argument("action", choices=["set"])
    s.add_argument("dir")
    s.add_argument("key", help="section.name, e.g. strategy.batch_size")
    s.add_argument("value", help='a TOML value (0.2, true, ["a", "b"]) or a bare word')
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("token", help="manage tokens for the server's optional TCP listener")
    s.add_argument("action", choices=["add"])
    s.add_argument("dir")
    s.add_argument("user")
    s.set_defaults(func=cmd_token)


def cmd_review(args) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        from labelloop.core.util.errors import LabelloopError

        raise LabelloopError("the review screen needs a terminal; run it in an interactive shell (or over ssh -t).")
    from labelloop.tui.review import run_review  # Textual is imported only here

    return run_review(Path(args.dir))


def cmd_serve(args) -> int:
    from labelloop.core.api.server import serve
    from labelloop.core.util.errors import LabelloopError

    tcp = None
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not host or not port.isdigit():
            raise LabelloopError(f"--tcp {args.tcp!r}: give it as HOST:PORT, e.g. 127.0.0.1:7420")
        tcp = (host, int(port))
    return serve(
        args.dir,
        compute="thread" if args.train_in_thread else "process",
        tcp=tcp,
        log=lambda msg: say(msg, file=sys.stderr),
        group=args.group,
    )


def cmd_doctor(args) -> int:
    """The checks ``serve`` makes before it starts, without starting anything: exit 1 on a problem."""
    from labelloop.core.api.folder import check_folder

    problems = check_folder(Path(args.dir), group=args.group)
    for p in problems:
        say(f"  [FAIL] {p.sentence()}")
    if problems:
        say(f"{len(problems)} problem(s): labelloop serve would refuse to start.")
        return 1
    say(f"{args.dir}: fit to serve" + (f" to the group {args.group}" if args.group else " (to its owner only)") + ".")
    return 0


def cmd_config(args) -> int:
    """``labelloop config set DIR KEY VALUE``: through the server when one runs (the file is its
    user's alone), in-process otherwise (the owner)."""
    with _client(args.dir) as client:
        r = client.call("config_set", key=args.key, value=args.value)
    say(f"{r['key']}: {r['old']!r} -> {r['new']!r} (in effect now; workstations show it when next opened).")
    return 0


def cmd_token(args) -> int:
    from labelloop.core.api.server import add_token

    token = add_token(args.dir, args.user)
    say(f"Token for {args.user} (shown once; give it to them over a safe channel):")
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from labelloop.core.util.errors import LabelloopError, StoreError

    try:
        return args.func(args) or 0
    except LabelloopError as exc:
        if args.debug:
            traceback.print_exc()
        say(f"labelloop: {safe_line(exc, None)}", file=sys.stderr)
        # the project store's disk failed (full, read-only): 3, as the README says; bad input: 2
        return EXIT_STORE_FAILED if isinstance(exc, StoreError) else EXIT_BAD_INPUT
    except BrokenPipeError:
        # the reader went away (status | head -1): stop quietly, as cat and grep do
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141
    except KeyboardInterrupt:
        print("labelloop: interrupted.", file=sys.stderr)
        return 130
    except OSError as exc:
        from labelloop.core.api.workspace import as_store_error

        if args.debug:
            traceback.print_exc()
        if as_store_error(exc) is not None:  # a full disk or an I/O error under the store
            say(f"labelloop: {safe_line(as_store_error(exc), None)}", file=sys.stderr)
            return EXIT_STORE_FAILED
        # a path the user named cannot be read or written (permissions, a folder where a file should be)
        where = f" {exc.filename}" if exc.filename else ""
        say(f"labelloop: cannot use{where}: {exc.strerror or exc}.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # an unexpected fault: one sentence unless --debug
        if args.debug or os.environ.get("LABELLOOP_DEBUG"):
            traceback.print_exc()
        from labelloop.core.api.workspace import as_store_error

        if as_store_error(exc) is not None:  # a full disk or an I/O error under the store
            say(f"labelloop: {safe_line(as_store_error(exc), None)}", file=sys.stderr)
            return EXIT_STORE_FAILED
        say(
            f"labelloop: unexpected error: {type(exc).__name__}: {safe_line(str(exc).splitlines()[0] if str(exc) else '', 300)} "
            "(run with --debug for the traceback).",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
