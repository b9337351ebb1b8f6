"""Import, export and status on a 1,000,000-row project, against bare DuckDB in the same run.

Targets (issue: Foundation): import <= 1.5x a bare read_csv into a table, export <= 1.5x a bare
COPY ... TO parquet of the same columns, peak RSS < 1.5 GB each, `labelloop status` < 1 s.
Each step runs in its own process so its peak RSS is its own.

    python bench/bench_store.py [--rows 1000000]
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

    bare_import = best(lambda i: run_child(
        "import duckdb, time\n"
        f"con = duckdb.connect(r'{work}/bare{i}.duckdb')\n"
        f"con.execute({bare_sql!r})\n"
        "con.close()\n"))
    for i in range(args.repeats):  # project creation is not part of the import
        run_child(f"from core.project import init_project; init_project(r'{work}/proj{i}', ['ham', 'spam'])")
    ll_import = best(lambda i: run_child(
        "from core.project import Project\n"
        "from core.importer import import_file\n"
        f"with Project.open(r'{work}/proj{i}') as p:\n"
        f"    r = import_file(p, r'{src}', id_col='id', label_col='label')\n"
        "    print(r.rows_imported, r.labelled)\n"))
    assert ll_import[2].split() == [str(n), str(n)], ll_import[2]

    project = f"{work}/proj0"
    flat = f"{work}/flat.duckdb"
    # The baseline copies a table that already holds exactly the export's columns.
    run_child(
        "import duckdb\n"
        "from core.exporter import FINAL_SQL\n"
        f"con = duckdb.connect(r'{flat}')\n"
        f"con.execute(\"ATTACH '{project}/project.duckdb' AS proj (READ_ONLY)\")\n"
        "con.execute('USE proj')\n"
        "con.execute('CREATE TABLE flat.main.t AS ' + FINAL_SQL)\n")
    bare_export = best(lambda i: run_child(
        "import duckdb\n"
        f"con = duckdb.connect(r'{flat}', read_only=True)\n"
        f"con.execute(\"COPY t TO '{work}/bare{i}.parquet' (FORMAT parquet, COMPRESSION zstd)\")\n"))
    ll_export = best(lambda i: run_child(
        "from core.project import Project\n"
        "from core.exporter import export_parquet\n"
        f"with Project.open(r'{project}') as p:\n"
        f"    print(export_parquet(p, r'{work}/out{i}.parquet').rows)\n"))
    assert ll_export[2].strip() == str(n), ll_export[2]
    status_inproc = run_child(
        "import time\n"
        "from core.project import Project\n"
        "from core.status import project_status\n"
        f"p = Project.open(r'{project}')\n"
        "t = time.perf_counter(); project_status(p); print(time.perf_counter() - t)\n")
    status_cli = best(lambda i: run_child(f"from tui.cli import main; main(['status', r'{project}'])"))

    print(f"rows: {n:,}  (file {csv.stat().st_size / 1e6:.0f} MB)")
    print(f"{'step':<34}{'seconds':>9}{'peak RSS MiB':>14}{'ratio':>8}")
    rows = [("bare DuckDB read_csv -> table", bare_import, None),
            ("labelloop import (validated)", ll_import, ll_import[0] / bare_import[0]),
            ("bare DuckDB COPY -> parquet", bare_export, None),
            ("labelloop export final", ll_export, ll_export[0] / bare_export[0])]
    for name, (secs, rss, _), ratio in rows:
        print(f"{name:<34}{secs:>9.2f}{rss:>14.0f}{'' if ratio is None else f'{ratio:>7.2f}x'}")
    print(f"{'labelloop status (in process)':<34}{float(status_inproc[2]):>9.3f}")
    print(f"{'labelloop status (whole CLI run)':<34}{status_cli[0]:>9.3f}{status_cli[1]:>14.0f}")
    print()
    verdicts = [("import ratio <= 1.5", ll_import[0] / bare_import[0] <= 1.5),
                ("import peak RSS < 1.5 GB", ll_import[1] < 1536),
                ("export ratio <= 1.5", ll_export[0] / bare_export[0] <= 1.5),
                ("export peak RSS < 1.5 GB", ll_export[1] < 1536),
                ("status < 1 s", float(status_inproc[2]) < 1.0)]
    for name, ok in verdicts:
        print(f"  [{'met' if ok else 'NOT MET'}] {name}")


if __name__ == "__main__":
    main()
