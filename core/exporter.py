"""``labelloop export``: final labels with full provenance, or the raw event log, to Parquet.

The file is written under a temporary name in the target folder and renamed
when complete, so a crash or a failed write never leaves half a file under the
final name.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from core.errors import LabelloopError
from core.faults import fault_point
from core.project import Project

# One row per item that has a current label, with the provenance of the decision and the item's own
# columns (see the final_decisions view in core/store.py). Columns that no decision filled are NULL.
# Rows come in no particular order (sorting 1M rows with their text would cost about a fifth of the
# export); sort on source_file, source_row or item_id when reading.
FINAL_SQL = """
SELECT item_id, text, CASE WHEN len(labels) = 1 THEN labels[1] END AS label, labels, decided_by, n_annotations,
       annotators, annotator_labels, labelled_at, durations_ms, decision_kinds, error_categories, notes,
       deciding_kind, decided_by_actor, decided_at, model_version, suggestion, shown_probs, suggestion_hidden,
       batch_id, strategy, score, rank, percentile, audit, split, metadata, source_file, source_row, imported_at
FROM final_decisions
"""

EVENTS_SQL = "SELECT * FROM events ORDER BY event_id"


@dataclass
class ExportReport:
    path: str
    what: str
    rows: int
    seconds: float


def export_parquet(project: Project, out: Path | str, what: str = "final") -> ExportReport:
    out = Path(out)
    if what not in ("final", "events"):
        raise LabelloopError(f"--what must be final or events, got {what!r}.")
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise LabelloopError(f"{out}: the export is Parquet; name the file .parquet.")
    if not out.parent.exists():
        raise LabelloopError(f"{out.parent} does not exist; create the folder first.")
    if out.is_dir():
        raise LabelloopError(f"{out} is a folder; give a file name ending in .parquet.")
    sql = FINAL_SQL if what == "final" else EVENTS_SQL
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    started = time.perf_counter()
    store = project.store
    try:
        with store._lock:
            quoted = str(tmp).replace("'", "''")
            # Rows carry no order (see FINAL_SQL), so DuckDB may write them from both threads at once.
            store.con.execute("SET preserve_insertion_order = false")
            try:
                store.con.execute(f"COPY ({sql}) TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)")
            finally:
                store.con.execute("RESET preserve_insertion_order")
        fault_point("export-before-rename")
        os.replace(tmp, out)
    except duckdb.Error as exc:
        raise LabelloopError(f"{out}: export failed ({str(exc).splitlines()[0]}); no file was written.") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    rows = store.scalar(f"SELECT count(*) FROM read_parquet('{str(out).replace(chr(39), chr(39) * 2)}')")
    return ExportReport(str(out), what, rows, time.perf_counter() - started)
