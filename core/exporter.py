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

# One row per item that has a current label (see the final_labels view). Columns that no decision
# filled are NULL. Rows come in no particular order (sorting 1M rows with their text would cost
# about a fifth of the export); sort on source_file, source_row or item_id when reading.
FINAL_SQL = """
WITH f AS MATERIALIZED (SELECT * FROM final_labels),
multi_ids AS (SELECT item_id FROM f WHERE n_annotations > 1 OR decided_by = 'adjudication'),
multi AS (
    -- ordered lists only where several annotators labelled the item or a reviewer settled it
    -- (filtered before grouping); for the usual single annotation the deciding event is the whole story
    SELECT item_id,
           list(actor ORDER BY event_id) AS annotators,
           list(array_to_string(labels, '|') ORDER BY event_id) AS annotator_labels,
           list(ts ORDER BY event_id) AS labelled_at,
           list(duration_ms ORDER BY event_id) AS durations_ms,
           list(via ORDER BY event_id) AS decision_kinds,
           list(error_category ORDER BY event_id) FILTER (WHERE error_category IS NOT NULL) AS error_categories,
           list(note ORDER BY event_id) FILTER (WHERE note IS NOT NULL) AS notes
    FROM (SELECT e.* FROM effective_events e SEMI JOIN multi_ids m ON m.item_id = e.item_id
          WHERE e.kind = 'label'
          QUALIFY row_number() OVER (PARTITION BY e.item_id, e.actor ORDER BY e.event_id DESC) = 1)
    GROUP BY item_id
)
SELECT i.id AS item_id, i.text,
       CASE WHEN len(f.labels) = 1 THEN f.labels[1] END AS label, f.labels, f.decided_by,
       f.n_annotations,
       CASE WHEN m.item_id IS NULL THEN [d.actor] ELSE m.annotators END AS annotators,
       CASE WHEN m.item_id IS NULL THEN [array_to_string(d.labels, '|')] ELSE m.annotator_labels END AS annotator_labels,
       CASE WHEN m.item_id IS NULL THEN [d.ts] ELSE m.labelled_at END AS labelled_at,
       CASE WHEN m.item_id IS NULL THEN [d.duration_ms] ELSE m.durations_ms END AS durations_ms,
       CASE WHEN m.item_id IS NULL THEN [d.via] ELSE m.decision_kinds END AS decision_kinds,
       CASE WHEN m.item_id IS NULL THEN (CASE WHEN d.error_category IS NOT NULL THEN [d.error_category] END)
            ELSE m.error_categories END AS error_categories,
       CASE WHEN m.item_id IS NULL THEN (CASE WHEN d.note IS NOT NULL THEN [d.note] END) ELSE m.notes END AS notes,
       d.kind AS deciding_kind, d.actor AS decided_by_actor, d.ts AS decided_at, d.model_version, d.suggestion,
       d.shown_probs, d.suggestion_hidden, d.batch_id, d.strategy, d.score, d.rank, d.percentile, d.audit,
       i.split, i.metadata, i.source_file, i.source_row, i.imported_at
FROM f
JOIN items i ON i.id = f.item_id
JOIN events d ON d.event_id = f.deciding_event
LEFT JOIN multi m ON m.item_id = f.item_id
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
