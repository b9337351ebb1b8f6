"""Import, export and status on a 1,000,000-row project, against bare DuckDB in the same run.

Targets (issue: Foundation): import <= 1.5x a bare read_csv into a table, export <= 1.5x a bare
COPY ... TO parquet of the same columns, peak RSS < 1.5 GB each, `labelloop status` < 1 s.
Each step runs in its own process so its peak RSS is its own; each timed step is the best of
--repeats runs. Export is measured twice: on the freshly imported project (every label came with
the file), and on a copy where 122,000 decisions were appended afterwards (second annotators,
disagreements, adjudications, undos), whose export goes through the event log. Each baseline
copies a table holding exactly its export's rows and columns, in file order.

    python bench/bench_store.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, run_child, synthetic_csv  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3, help="best of N for each timed step")
    args = ap.parse_args()
    n = args.rows
    csv = synthetic_csv(OUT / f"synthetic_{n}.csv", n, labelled=True)
    work = OUT / "store_bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = str(csv)
    opts = "header=true, delim=',', quote='\"', escape='\"', all_varchar=true, strict_mode=true, null_padding=false"

    bare_sql = f"CREATE TABLE t AS SELECT * FROM read_csv('{src}', {opts})"

    def best(fn):
        runs = [fn(i) for i in range(args.repeats)]
        return min(r[0] for r in runs), max(r[1] for r in runs), runs[-1][2]

    bare_import = best(
        lambda i: run_child(
            "import duckdb, time\n"
            f"con = duckdb.connect(r'{work}/bare{i}.duckdb')\n"
            f"con.execute({bare_sql!r})\n"
            "con.close()\n"
        )
    )
    for i in range(args.repeats):  # project creation is not part of the import
        run_child(
            f"from labelloop.core.store.project import init_project; init_project(r'{work}/proj{i}', ['ham', 'spam'])"
        )
    ll_import = best(
        lambda i: run_child(
            "from labelloop.core.store.project import Project\n"
            "from labelloop.core.store.imports import import_file\n"
            f"with Project.open(r'{work}/proj{i}') as p:\n"
            f"    r = import_file(p, r'{src}', id_col='id', label_col='label')\n"
            "    print(r.rows_imported, r.labelled)\n"
        )
    )
    assert ll_import[2].split() == [str(n), str(n)], ll_import[2]

    project = f"{work}/proj0"
    mixed = f"{work}/mixed"
    # A second project where people have worked: the same 1M imported rows, then 100,000 labels by
    # annotators with everything the workstation records, a second annotator on 20,000 of them (one
    # in six disagreeing), 2,000 adjudications and 1,000 undos. Its export goes through the event log.
    shutil.copytree(project, mixed)
    run_child(
        "from labelloop.core.store.project import Project\n"
        f"with Project.open(r'{mixed}') as p:\n"
        "    con = p.store.con\n"
        "    base = con.execute('SELECT max(event_id) FROM events').fetchone()[0]\n"
        '    con.execute("""INSERT INTO event_log (event_id, item_id, kind, via, actor, ts, duration_ms, labels,\n'
        "        error_category, note, model_version, shown_probs, suggestion, suggestion_hidden, batch_id, strategy,\n"
        "        score, rank, percentile, audit)\n"
        "      SELECT ? + r, 's' || (r * 7)::VARCHAR, 'label', CASE WHEN r % 5 = 0 THEN 'correction' ELSE 'accept' END,\n"
        "        'annotator' || (r % 4)::VARCHAR, now(), 800 + r % 900, [CASE WHEN r % 3 = 0 THEN 'spam' ELSE 'ham' END],\n"
        "        CASE WHEN r % 5 = 0 THEN 'wrong class' END, CASE WHEN r % 50 = 0 THEN 'see guideline 3' END,\n"
        "        7, '{\"ham\": 0.61, \"spam\": 0.39}', 'ham', r % 10 = 0, r // 100, 'margin', 0.2, r % 100, 99.5, r % 10 = 1\n"
        '      FROM range(1, 100001) t(r)""", [base])\n'
        '    con.execute("""INSERT INTO event_log (event_id, item_id, kind, via, actor, ts, duration_ms, labels)\n'
        "      SELECT ? + 100000 + r, 's' || (r * 7)::VARCHAR, 'label', 'key', 'second', now(), 1200,\n"
        "        [CASE WHEN r % 4 = 0 THEN 'spam' ELSE (CASE WHEN r % 3 = 0 THEN 'spam' ELSE 'ham' END) END]\n"
        '      FROM range(1, 20001) t(r)""", [base])\n'
        '    con.execute("""INSERT INTO event_log (event_id, item_id, kind, via, actor, ts, labels, note)\n'
        "      SELECT ? + 120000 + r, 's' || (r * 28)::VARCHAR, 'adjudicate', 'review', 'reviewer', now(), ['spam'], 'settled'\n"
        '      FROM range(1, 2001) t(r)""", [base])\n'
        '    con.execute("""INSERT INTO event_log (event_id, item_id, kind, actor, ts, target_event)\n'
        "      SELECT ? + 122000 + r, 's' || (r * 7)::VARCHAR, 'undo', 'annotator' || (r % 4)::VARCHAR, now(), ? + r\n"
        '      FROM range(50001, 51001) t(r)""", [base, base])\n'
    )
    flat = f"{work}/flat.duckdb"
    flat_mixed = f"{work}/flat_mixed.duckdb"
    # The baselines copy a table that already holds exactly the export's columns and rows, in file order.
    for src, dst in ((project, flat), (mixed, flat_mixed)):
        run_child(
            "import duckdb\n"
            "from labelloop.core.store.exports import FINAL_SQL\n"
            f"con = duckdb.connect(r'{dst}')\n"
            f"con.execute(\"ATTACH '{src}/project.duckdb' AS proj (READ_ONLY)\")\n"
            "con.execute('USE proj')\n"
            "con.execute('CREATE TABLE flat.main.t AS SELECT * FROM (' + FINAL_SQL + ') ORDER BY source_row')\n".replace(
                "flat.main.t", f"{Path(dst).stem}.main.t"
            )
        )

    def export_pair(proj, flat_db, tag):
        bare = best(
            lambda i: run_child(
                "import duckdb\n"
                f"con = duckdb.connect(r'{flat_db}', read_only=True)\n"
                f"con.execute(\"COPY t TO '{work}/bare_{tag}{i}.parquet' (FORMAT parquet, COMPRESSION zstd)\")\n"
            )
        )
        ours = best(
            lambda i: run_child(
                "from labelloop.core.store.project import Project\n"
                "from labelloop.core.store.exports import export_parquet\n"
                f"with Project.open(r'{proj}') as p:\n"
                f"    print(export_parquet(p, r'{work}/out_{tag}{i}.parquet').rows)\n"
            )
        )
        return bare, ours

    bare_export, ll_export = export_pair(project, flat, "import")
    assert ll_export[2].strip() == str(n), ll_export[2]
    bare_mixed, ll_mixed = export_pair(mixed, flat_mixed, "mixed")
    status_inproc = run_child(
        "import time\n"
        "from labelloop.core.store.project import Project\n"
        "from labelloop.core.store.reports import project_status\n"
        f"p = Project.open(r'{project}')\n"
        "t = time.perf_counter(); project_status(p); print(time.perf_counter() - t)\n"
    )
    status_cli = best(lambda i: run_child(f"from labelloop.tui.cli import main; main(['status', r'{project}'])"))

    print(f"rows: {n:,}  (file {csv.stat().st_size / 1e6:.0f} MB)")
    print(f"{'step':<38}{'seconds':>9}{'peak RSS MiB':>14}{'ratio':>8}")
    rows = [
        ("bare DuckDB read_csv -> table", bare_import, None),
        ("labelloop import (validated)", ll_import, ll_import[0] / bare_import[0]),
        ("bare DuckDB COPY -> parquet", bare_export, None),
        ("labelloop export final", ll_export, ll_export[0] / bare_export[0]),
        ("  after 122k decisions: bare COPY", bare_mixed, None),
        ("  after 122k decisions: export", ll_mixed, ll_mixed[0] / bare_mixed[0]),
    ]
    for name, (secs, rss, _), ratio in rows:
        print(f"{name:<38}{secs:>9.2f}{rss:>14.0f}{'' if ratio is None else f'{ratio:>7.2f}x'}")
    print(f"{'labelloop status (in process)':<38}{float(status_inproc[2]):>9.3f}")
    print(f"{'labelloop status (whole CLI run)':<38}{status_cli[0]:>9.3f}{status_cli[1]:>14.0f}")
    print()
    verdicts = [
        ("import ratio <= 1.5", ll_import[0] / bare_import[0] <= 1.5),
        ("import peak RSS < 1.5 GB", ll_import[1] < 1536),
        ("export ratio <= 1.5", ll_export[0] / bare_export[0] <= 1.5),
        ("export peak RSS < 1.5 GB", ll_export[1] < 1536),
        ("export ratio <= 1.5 after 122k decisions", ll_mixed[0] / bare_mixed[0] <= 1.5),
        ("export peak RSS < 1.5 GB after 122k decisions", ll_mixed[1] < 1536),
        ("status < 1 s", float(status_inproc[2]) < 1.0),
    ]
    for name, ok in verdicts:
        print(f"  [{'met' if ok else 'NOT MET'}] {name}")


if __name__ == "__main__":
    main()
