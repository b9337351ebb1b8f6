"""``labelloop export``: final labels with full provenance, or the raw event log, to Parquet.

The file is written under a temporary name in the target folder and renamed
when complete, so a crash or a failed write never leaves half a file under the
final name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from labelloop.core.store import is_io_failure
from labelloop.core.store.project import Project
from labelloop.core.util.errors import LabelloopError, StoreError
from labelloop.core.util.faults import fault_point
from labelloop.core.util.safeio import atomic_path

# One row per item that has a final decision, a skip or a flag. `decision` says which: 'label' (a final
# label: single annotator, agreement, adjudication or import), 'unresolved' (annotators disagree and no
# reviewer has decided), 'skip' or 'flag' (nobody labelled it; the skip and flag notes are in `notes`).
# Labelled items that were also skipped or flagged carry n_skips, n_flags and skip_flag_notes. The
# provenance of the deciding event and the item's own columns come from the final_decisions view
# (core/store/__init__.py, MIGRATIONS). Rows come in no particular order (sorting 1M rows with their text would cost about a
# fifth of the export); sort on source_file, source_row or item_id when reading.
FINAL_SQL = """
WITH sf AS (SELECT * FROM skips_and_flags),
decided AS (
    SELECT f.item_id, f.text, CASE WHEN len(f.labels) = 1 THEN f.labels[1] END AS label, f.labels,
           CASE WHEN f.decided_by = 'unresolved' THEN 'unresolved' ELSE 'label' END AS decision,
           f.decided_by, f.n_annotations, f.annotators, f.annotator_labels, f.labelled_at, f.durations_ms,
           f.decision_kinds, f.error_categories, f.notes, f.deciding_kind, f.decided_by_actor, f.decided_at,
           f.model_version, f.suggestion, f.shown_probs, f.suggestion_hidden, f.batch_id, f.strategy, f.score,
           f.rank, f.percentile, f.audit,
           coalesce(sf.n_skips, 0) AS n_skips, coalesce(sf.n_flags, 0) AS n_flags, sf.notes AS skip_flag_notes,
           f.split, f.metadata, f.source_file, f.source_row, f.imported_at,
           adj.note AS rationale   -- the reviewer's, when an adjudication decided the item
    FROM final_decisions f LEFT JOIN sf USING (item_id)
    LEFT JOIN (SELECT event_id, note FROM event_log WHERE kind = 'adjudicate') adj ON adj.event_id = f.deciding_event
),
only_skipped_or_flagged AS (
    SELECT i.id AS item_id, i.text, NULL::VARCHAR AS label, NULL::VARCHAR[] AS labels,
           CASE WHEN sf.n_flags > 0 THEN 'flag' ELSE 'skip' END AS decision,
           NULL::VARCHAR AS decided_by, 0::BIGINT AS n_annotations, sf.actors AS annotators,
           NULL::VARCHAR[] AS annotator_labels, NULL::TIMESTAMPTZ[] AS labelled_at, NULL::DOUBLE[] AS durations_ms,
           sf.kinds AS decision_kinds, NULL::VARCHAR[] AS error_categories, sf.notes AS notes,
           e.kind AS deciding_kind, e.actor AS decided_by_actor, e.ts AS decided_at, e.model_version,
           e.suggestion, e.shown_probs, e.suggestion_hidden, e.batch_id, e.strategy, e.score, e.rank, e.percentile,
           e.audit, sf.n_skips, sf.n_flags, sf.notes AS skip_flag_notes,
           i.split, i.metadata, i.source_file, i.source_row, i.imported_at, NULL::VARCHAR AS rationale
    FROM sf JOIN items i ON i.id = sf.item_id JOIN event_log e ON e.event_id = sf.last_event
    WHERE NOT EXISTS (SELECT 1 FROM effective_events x WHERE x.item_id = sf.item_id AND x.kind = 'label')
)
SELECT * FROM decided
UNION ALL BY NAME
SELECT * FROM only_skipped_or_flagged
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
    started = time.perf_counter()
    store = project.store
    try:
        # DuckDB writes inside a private temporary folder beside OUT; the file is fsynced and renamed
        # only when complete (core/util/safeio.py).
        with atomic_path(out) as tmp:
            with store._lock:
                quoted = str(tmp).replace("'", "''")
                # Rows carry no order (see FINAL_SQL), so DuckDB may write them from both threads at once.
                store.con.execute("SET preserve_insertion_order = false")
                try:
                    store.con.execute(f"COPY ({sql}) TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)")
                finally:
                    store.con.execute("RESET preserve_insertion_order")
            fault_point("export-before-rename")
    except (duckdb.Error, OSError) as exc:
        text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc).splitlines()[0]
        # a full or failing disk is the store's failure (exit code 3); anything else is this export's
        error = StoreError if is_io_failure(exc) else LabelloopError
        raise error(f"{out}: export failed ({text}); no file was written.") from None
    rows = store.scalar(f"SELECT count(*) FROM read_parquet('{str(out).replace(chr(39), chr(39) * 2)}')")
    return ExportReport(str(out), what, rows, time.perf_counter() - started)
