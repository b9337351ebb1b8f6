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

# One row per item that has a current label. Columns that no decision has filled are NULL.
FINAL_SQL = """
WITH ann AS (
    SELECT item_id,
           list(actor ORDER BY event_id) AS annotators,
           list(array_to_string(labels, '|') ORDER BY event_id) AS annotator_labels,
           list(ts ORDER BY event_id) AS labelled_at,
           list(duration_ms ORDER BY event_id) AS durations_ms,
           list(via ORDER BY event_id) AS decision_kinds,
           list(error_category ORDER BY event_id) FILTER (WHERE error_category IS NOT NULL) AS error_categories,
           list(note ORDER BY event_id) FILTER (WHERE note IS NOT NULL) AS notes
    FROM annotations GROUP BY item_id
)
SELECT i.id AS item_id,
       i.text,
       CASE WHEN len(f.labels) = 1 THEN f.labels[1] END AS label,
       f.labels AS labels,
       f.decided_by,
       f.n_annotations,
       ann.annotators,
       ann.annotator_labels,
       ann.labelled_at,
       ann.durations_ms,
       ann.decision_kinds,
       ann.error_categories,
       ann.notes,
       d.kind AS deciding_kind,
       d.actor AS decided_by_actor,
       d.ts AS decided_at,
       d.model_version,
       d.suggestion,
       d.shown_probs,
       d.suggestion_hidden,
       d.batch_id,
       d.strategy,
       d.score,
       d.rank,
       d.percentile,
       d.audit,
       i.split,
       i.metadata,
       i.source_file,
       i.source_row,
       i.imported_at
FROM final_labels f
JOIN items i ON i.id = f.item_id
LEFT JOIN ann ON ann.item_id = f.item_id
LEFT JOIN events d ON d.event_id = f.deciding_event
ORDER BY i.ord
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
            store.con.execute(f"COPY ({sql}) TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)")
        fault_point("export-before-rename")
        os.replace(tmp, out)
    except duckdb.Error as exc:
        raise LabelloopError(f"{out}: export failed ({str(exc).splitlines()[0]}); no file was written.") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    rows = store.scalar(f"SELECT count(*) FROM read_parquet('{str(out).replace(chr(39), chr(39) * 2)}')")
    return ExportReport(str(out), what, rows, time.perf_counter() - started)
