"""The project store: one DuckDB file with versioned migrations and an
append-only event log.

History is never UPDATEd or DELETEd: a label, an undo, a skip, a flag and an
adjudication are all events; current labels are views over them. Decisions are
appended to ``event_log``; the import event of a pre-labelled row is stored on
its ``items`` row (since migration 2); the ``events`` view shows both as one log.
One process owns the file (DuckDB allows one read-write process); threads in
that process use ``Store.cursor()``.
"""

from __future__ import annotations

import errno
import json
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb

from labelloop.core.util.errors import ProjectError, StoreError
from labelloop.core.util.faults import fault_error

DB_NAME = "project.duckdb"

EVENT_KINDS = ("label", "skip", "flag", "undo", "adjudicate", "denied", "config")
EVENT_FIELDS = {
    "via",
    "duration_ms",
    "labels",
    "error_category",
    "note",
    "model_version",
    "shown_probs",
    "suggestion",
    "suggestion_hidden",
    "batch_id",
    "strategy",
    "score",
    "rank",
    "percentile",
    "audit",
    "target_event",
    "session_id",
    "ts",
    "client_msg_id",
}

# Each migration is applied once, in order, inside one transaction with its version row.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "initial schema",
        [
            """CREATE TABLE items (
            id VARCHAR NOT NULL,
            ord BIGINT NOT NULL,              -- dense row index, used by the feature matrix
            text VARCHAR NOT NULL,
            metadata VARCHAR,                 -- JSON object of the imported metadata columns
            split VARCHAR NOT NULL,           -- pool | test | gold
            source_labels VARCHAR[],          -- label(s) the source file gave the row (sorted)
            -- for test/gold items the reference label(s); pool labels become import events instead
            gold_label VARCHAR[] GENERATED ALWAYS AS (CASE WHEN split <> 'pool' THEN source_labels END) VIRTUAL,
            source_file VARCHAR NOT NULL,
            source_row BIGINT NOT NULL,       -- 1-based data row in the source file
            import_id INTEGER NOT NULL,
            imported_at TIMESTAMPTZ NOT NULL
        )""",
            """CREATE TABLE imports (
            import_id INTEGER NOT NULL,
            source_file VARCHAR NOT NULL,
            format VARCHAR NOT NULL,
            rows_read BIGINT NOT NULL,
            rows_imported BIGINT NOT NULL,
            rows_rejected BIGINT NOT NULL,
            labelled BIGINT NOT NULL,
            imported_at TIMESTAMPTZ NOT NULL,
            actor VARCHAR NOT NULL
        )""",
            """CREATE TABLE events (
            event_id BIGINT NOT NULL,
            item_id VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,            -- label | skip | flag | undo | adjudicate
            via VARCHAR,                      -- key | accept | correction | import | review
            actor VARCHAR NOT NULL,
            ts TIMESTAMPTZ NOT NULL,
            duration_ms DOUBLE,
            labels VARCHAR[],
            error_category VARCHAR,
            note VARCHAR,
            model_version INTEGER,
            shown_probs VARCHAR,              -- JSON {label: calibrated probability} as shown
            suggestion VARCHAR,
            suggestion_hidden BOOLEAN,
            batch_id INTEGER,
            strategy VARCHAR,
            score DOUBLE,
            rank INTEGER,
            percentile DOUBLE,
            audit BOOLEAN,
            target_event BIGINT,              -- the event an undo takes back
            session_id VARCHAR
        )""",
            """CREATE TABLE models (
            version INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            n_train INTEGER NOT NULL,
            classes VARCHAR[] NOT NULL,
            calibration VARCHAR NOT NULL,
            temperature DOUBLE,
            train_seconds DOUBLE,
            score_seconds DOUBLE,
            metrics VARCHAR,                  -- JSON: accuracy, macro_f1, ece, ... on the test split
            artifact VARCHAR,                 -- file in the project's models/ folder
            origin VARCHAR                    -- trained | imported
        )""",
            """CREATE TABLE batches (
            batch_id INTEGER NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            model_version INTEGER,
            strategy VARCHAR NOT NULL,
            size INTEGER NOT NULL,
            n_audit INTEGER NOT NULL,
            pool_size BIGINT,
            signals VARCHAR                   -- JSON: batch convergence and stopping signals
        )""",
            """CREATE TABLE queue (
            batch_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            item_id VARCHAR NOT NULL,
            strategy VARCHAR NOT NULL,
            score DOUBLE,
            rank INTEGER,
            percentile DOUBLE,
            audit BOOLEAN NOT NULL,
            model_version INTEGER,
            probs VARCHAR                     -- JSON {label: p} at selection time
        )""",
            # Events that an undo has not taken back.
            # (An explicit ANTI JOIN against the few undo rows plans as one small hash table; a correlated
            # NOT EXISTS made DuckDB group the whole log first.)
            """CREATE VIEW effective_events AS
            SELECT e.* FROM events e
            ANTI JOIN (SELECT target_event FROM events WHERE kind = 'undo' AND target_event IS NOT NULL) u
                ON u.target_event = e.event_id
            WHERE e.kind <> 'undo'""",
            # Each actor's current label for each item (the latest of their label events not undone).
            """CREATE VIEW annotations AS
            SELECT e.* FROM events e
            JOIN (SELECT max(event_id) AS event_id FROM effective_events WHERE kind = 'label'
                  GROUP BY item_id, actor) latest USING (event_id)""",
            # One row per item that has a current label. labels is NULL while annotators disagree and no
            # adjudication has settled it. Label lists are stored sorted, so equal lists mean agreement.
            # Most items have one actor: they are settled by one GROUP BY; only items that several actors
            # labelled go through each actor's latest label.
            """CREATE VIEW final_labels AS
            WITH per_item AS (
                SELECT item_id, min(actor) AS actor_lo, max(actor) AS actor_hi, arg_max(labels, event_id) AS last_labels,
                       arg_max(via, event_id) AS last_via, max(event_id) AS last_event
                FROM effective_events WHERE kind = 'label' GROUP BY item_id
            ),
            multi AS (
                -- only items that several actors labelled need each actor's latest label
                SELECT item_id, count(*) AS n_annotations, min(labels) AS lo, max(labels) AS hi,
                       bool_and(via = 'import') AS all_import, max(event_id) AS last_event
                FROM (SELECT item_id, actor, arg_max(labels, event_id) AS labels, arg_max(via, event_id) AS via, max(event_id) AS event_id
                      FROM effective_events e SEMI JOIN (SELECT item_id FROM per_item WHERE actor_lo <> actor_hi) m USING (item_id)
                      WHERE e.kind = 'label' GROUP BY item_id, actor)
                GROUP BY item_id
            ),
            agg AS (
                SELECT p.item_id,
                       coalesce(m.n_annotations, 1) AS n_annotations,
                       coalesce(m.lo, p.last_labels) AS lo, coalesce(m.hi, p.last_labels) AS hi,
                       coalesce(m.all_import, p.last_via = 'import') AS all_import,
                       p.last_event
                FROM per_item p LEFT JOIN multi m USING (item_id)
            ),
            adj AS (
                SELECT item_id, arg_max(labels, event_id) AS labels, max(event_id) AS event_id
                FROM effective_events WHERE kind = 'adjudicate' GROUP BY item_id
            )
            SELECT agg.item_id,
                   CASE WHEN adj.item_id IS NOT NULL THEN adj.labels WHEN agg.lo = agg.hi THEN agg.lo END AS labels,
                   CASE WHEN adj.item_id IS NOT NULL THEN 'adjudication'
                        WHEN agg.lo <> agg.hi THEN 'unresolved'
                        WHEN agg.all_import THEN 'import'
                        WHEN agg.n_annotations > 1 THEN 'agreement'
                        ELSE 'single annotator' END AS decided_by,
                   agg.n_annotations,
                   coalesce(adj.event_id, agg.last_event) AS deciding_event
            FROM agg LEFT JOIN adj USING (item_id)""",
            "CREATE TABLE schema_meta (key VARCHAR NOT NULL, value VARCHAR NOT NULL)",
        ],
    ),
    (
        2,
        "import labels ride on their item rows; final decisions in one pass",
        [
            # A pool row that arrives with a label has one import event, as before, but it is stored on the
            # item row it labels (items.import_event holds its id; the actor and time are the import's)
            # instead of as a second row written elsewhere. `events` becomes a view over both: the rows
            # appended by decisions (event_log) and the import events carried by items. Every reader sees
            # one event log; nothing is UPDATEd or DELETEd in either table.
            # (Measured on 1M pre-labelled rows: the second write was a third of the import, and joining
            # it back to the items was most of the export.)
            "DROP VIEW final_labels",
            "DROP VIEW annotations",
            "DROP VIEW effective_events",
            "ALTER TABLE events RENAME TO event_log",
            "ALTER TABLE items ADD COLUMN import_event BIGINT",
            """CREATE VIEW events AS
            SELECT event_id, item_id, kind, via, actor, ts, duration_ms, labels, error_category, note, model_version,
                   shown_probs, suggestion, suggestion_hidden, batch_id, strategy, score, rank, percentile, audit,
                   target_event, session_id
            FROM event_log
            UNION ALL
            SELECT i.import_event, i.id, 'label', 'import', m.actor, i.imported_at, NULL::DOUBLE, i.source_labels,
                   NULL::VARCHAR, NULL::VARCHAR, NULL::INTEGER, NULL::VARCHAR, NULL::VARCHAR, NULL::BOOLEAN,
                   NULL::INTEGER, NULL::VARCHAR, NULL::DOUBLE, NULL::INTEGER, NULL::DOUBLE, NULL::BOOLEAN,
                   NULL::BIGINT, NULL::VARCHAR
            FROM items i JOIN imports m USING (import_id)
            WHERE i.import_event IS NOT NULL""",
            # Events that an undo has not taken back.
            # (An explicit ANTI JOIN against the few undo rows plans as one small hash table; a correlated
            # NOT EXISTS made DuckDB group the whole log first.)
            """CREATE VIEW effective_events AS
            SELECT e.* FROM events e
            ANTI JOIN (SELECT target_event FROM event_log WHERE kind = 'undo' AND target_event IS NOT NULL) u
                ON u.target_event = e.event_id
            WHERE e.kind <> 'undo'""",
            # Each actor's current label for each item (the latest of their label events not undone).
            """CREATE VIEW annotations AS
            SELECT e.* FROM events e
            JOIN (SELECT max(event_id) AS event_id FROM effective_events WHERE kind = 'label'
                  GROUP BY item_id, actor) latest USING (event_id)""",
            # Items whose final label depends on the decision log: anything labelled or adjudicated there,
            # and items whose import event was undone. Every other pre-labelled item is decided by its import.
            """CREATE VIEW log_items AS
            SELECT item_id FROM event_log WHERE kind IN ('label', 'adjudicate')
            UNION
            SELECT i.id FROM items i
            SEMI JOIN (SELECT target_event FROM event_log WHERE kind = 'undo') u ON u.target_event = i.import_event""",
            # The final decision of every item in log_items, from its effective events (its import event
            # included). Items with exactly one label event and no adjudication take the first branch; the
            # others (several annotators, one who relabelled, an adjudication) take the second: each actor's
            # latest label, then agreement, disagreement ('unresolved', labels NULL) or the reviewer's call.
            # Label lists are stored sorted, so equal lists mean agreement.
            """CREATE VIEW log_decisions AS
            WITH undone AS (
                SELECT target_event AS event_id FROM event_log WHERE kind = 'undo' AND target_event IS NOT NULL
            ),
            ev AS (
                -- the effective label and adjudicate events of the items in log_items: every such event in
                -- event_log, and the import events of those items (read from their rows)
                SELECT event_id, item_id, kind, via, actor, ts, duration_ms, labels, error_category, note,
                       model_version, shown_probs, suggestion, suggestion_hidden, batch_id, strategy, score, rank,
                       percentile, audit
                FROM event_log e ANTI JOIN undone USING (event_id)
                WHERE e.kind IN ('label', 'adjudicate')
                UNION ALL
                SELECT e.event_id, e.item_id, e.kind, e.via, e.actor, e.ts, e.duration_ms, e.labels, e.error_category,
                       e.note, e.model_version, e.shown_probs, e.suggestion, e.suggestion_hidden, e.batch_id,
                       e.strategy, e.score, e.rank, e.percentile, e.audit
                FROM (SELECT i.import_event AS event_id, i.id AS item_id, 'label' AS kind, 'import' AS via,
                             m.actor, i.imported_at AS ts, NULL::DOUBLE AS duration_ms, i.source_labels AS labels,
                             NULL::VARCHAR AS error_category, NULL::VARCHAR AS note, NULL::INTEGER AS model_version,
                             NULL::VARCHAR AS shown_probs, NULL::VARCHAR AS suggestion,
                             NULL::BOOLEAN AS suggestion_hidden, NULL::INTEGER AS batch_id, NULL::VARCHAR AS strategy,
                             NULL::DOUBLE AS score, NULL::INTEGER AS rank, NULL::DOUBLE AS percentile,
                             NULL::BOOLEAN AS audit
                      FROM items i JOIN imports m USING (import_id)
                      SEMI JOIN log_items l ON l.item_id = i.id
                      WHERE i.import_event IS NOT NULL) e
                ANTI JOIN undone USING (event_id)
            ),
            several_ids AS (
                SELECT item_id FROM ev GROUP BY item_id HAVING count(*) > 1
            ),
            latest AS (
                -- each actor's latest label on the items with several events
                SELECT e.* FROM ev e
                SEMI JOIN (SELECT max(event_id) AS event_id FROM ev SEMI JOIN several_ids USING (item_id)
                           WHERE kind = 'label' GROUP BY item_id, actor) l USING (event_id)
            ),
            several AS (
                -- the annotations as one list of records, sorted by event id (list_sort orders records by
                -- their first field; an ORDER BY inside each list() aggregate measured several times slower)
                -- (labels joined with '|', which no label name may contain: comparing strings is cheaper)
                SELECT item_id, count(*) AS n_annotations, min(labels_s) AS lo, max(labels_s) AS hi,
                       bool_and(via = 'import') AS all_import, max(event_id) AS last_label,
                       list_sort(list({'id': event_id, 'actor': actor, 'labels': labels_s, 'ts': ts,
                                       'ms': duration_ms, 'via': via, 'error': error_category, 'note': note})) AS h
                FROM (SELECT *, array_to_string(labels, '|') AS labels_s FROM latest) GROUP BY item_id
            ),
            adjudicated AS (
                SELECT item_id, max(event_id) AS event_id FROM ev e SEMI JOIN several_ids s USING (item_id)
                WHERE e.kind = 'adjudicate' GROUP BY item_id
            )
            SELECT d.item_id, d.labels,
                   CASE WHEN d.via = 'import' THEN 'import' ELSE 'single annotator' END AS decided_by,
                   1::BIGINT AS n_annotations, d.event_id AS deciding_event,
                   [d.actor] AS annotators, [array_to_string(d.labels, '|')] AS annotator_labels, [d.ts] AS labelled_at,
                   [d.duration_ms] AS durations_ms, [d.via] AS decision_kinds,
                   CASE WHEN d.error_category IS NOT NULL THEN [d.error_category] END AS error_categories,
                   CASE WHEN d.note IS NOT NULL THEN [d.note] END AS notes,
                   d.kind AS deciding_kind, d.actor AS decided_by_actor, d.ts AS decided_at, d.model_version,
                   d.suggestion, d.shown_probs, d.suggestion_hidden, d.batch_id, d.strategy, d.score, d.rank,
                   d.percentile, d.audit
            FROM ev d ANTI JOIN several_ids s USING (item_id)
            WHERE d.kind = 'label'
            UNION ALL
            SELECT s.item_id,
                   -- d is the adjudication, or the latest label, which is everyone's label when they agree
                   CASE WHEN a.item_id IS NOT NULL OR s.lo = s.hi THEN d.labels END AS labels,
                   CASE WHEN a.item_id IS NOT NULL THEN 'adjudication'
                        WHEN s.lo <> s.hi THEN 'unresolved'
                        WHEN s.all_import THEN 'import'
                        WHEN s.n_annotations > 1 THEN 'agreement'
                        ELSE 'single annotator' END AS decided_by,
                   s.n_annotations, d.event_id AS deciding_event,
                   list_transform(s.h, lambda x: x.actor) AS annotators,
                   list_transform(s.h, lambda x: x.labels) AS annotator_labels,
                   list_transform(s.h, lambda x: x.ts) AS labelled_at,
                   list_transform(s.h, lambda x: x.ms) AS durations_ms,
                   list_transform(s.h, lambda x: x.via) AS decision_kinds,
                   nullif(list_filter(list_transform(s.h, lambda x: x.error), lambda x: x IS NOT NULL), []) AS error_categories,
                   nullif(list_filter(list_transform(s.h, lambda x: x.note), lambda x: x IS NOT NULL), []) AS notes,
                   d.kind AS deciding_kind, d.actor AS decided_by_actor, d.ts AS decided_at, d.model_version,
                   d.suggestion, d.shown_probs, d.suggestion_hidden, d.batch_id, d.strategy, d.score, d.rank,
                   d.percentile, d.audit
            FROM several s LEFT JOIN adjudicated a USING (item_id)
            JOIN ev d ON d.event_id = coalesce(a.event_id, s.last_label)""",
            # One row per item that has a current label: the deciding event's provenance and the item's own
            # columns (the export reads them all from here; final_labels reads a few, and DuckDB then reads
            # only those). An item in log_items takes its decision from log_decisions; any other item with an
            # import event is decided by that event, read from its row. One pass over items serves both.
            """CREATE VIEW final_decisions AS
            SELECT i.id AS item_id,
                   CASE WHEN f.item_id IS NULL THEN i.source_labels ELSE f.labels END AS labels,
                   coalesce(f.decided_by, 'import') AS decided_by,
                   coalesce(f.n_annotations, 1) AS n_annotations,
                   coalesce(f.deciding_event, i.import_event) AS deciding_event,
                   coalesce(f.annotators, [m.actor]) AS annotators,
                   coalesce(f.annotator_labels, [array_to_string(i.source_labels, '|')]) AS annotator_labels,
                   coalesce(f.labelled_at, [i.imported_at]) AS labelled_at,
                   coalesce(f.durations_ms, [NULL::DOUBLE]) AS durations_ms,
                   coalesce(f.decision_kinds, ['import']) AS decision_kinds,
                   f.error_categories, f.notes,
                   coalesce(f.deciding_kind, 'label') AS deciding_kind,
                   coalesce(f.decided_by_actor, m.actor) AS decided_by_actor,
                   coalesce(f.decided_at, i.imported_at) AS decided_at,
                   f.model_version, f.suggestion, f.shown_probs, f.suggestion_hidden, f.batch_id, f.strategy,
                   f.score, f.rank, f.percentile, f.audit,
                   i.text, i.split, i.metadata, i.source_file, i.source_row, i.imported_at
            FROM items i
            JOIN imports m USING (import_id)
            LEFT JOIN log_decisions f ON f.item_id = i.id
            LEFT JOIN log_items l ON l.item_id = i.id
            WHERE f.item_id IS NOT NULL OR (l.item_id IS NULL AND i.import_event IS NOT NULL)""",
            # One row per item that has a current label. labels is NULL while annotators disagree and no
            # adjudication has settled it.
            """CREATE VIEW final_labels AS
            SELECT item_id, labels, decided_by, n_annotations, deciding_event FROM final_decisions""",
        ],
    ),
]
MIGRATIONS.append(
    (
        3,
        "one definition of undecided; skipped and flagged items in the final export",
        [
            "ALTER TABLE imports ADD COLUMN rows_deduped BIGINT DEFAULT 0",  # rows dropped by import --dedupe
            # An item is decided (it leaves every queue) once it has an effective label, skip or flag. This
            # is the only definition: the workstation's queue, `labelloop next`, `status` and the loop's
            # candidate pool all read it.
            """CREATE VIEW decided_items AS
            SELECT DISTINCT item_id FROM effective_events WHERE kind IN ('label', 'skip', 'flag')""",
            # The open queue: the latest batch's items that are not decided, with why each was chosen.
            # (Restricted to the batch's few items before the anti join, so the log is not grouped whole.)
            """CREATE VIEW open_queue AS
            WITH latest AS (SELECT * FROM queue WHERE batch_id = (SELECT max(batch_id) FROM batches)),
            done AS (
                SELECT DISTINCT e.item_id FROM effective_events e SEMI JOIN latest l ON l.item_id = e.item_id
                WHERE e.kind IN ('label', 'skip', 'flag'))
            SELECT l.* FROM latest l ANTI JOIN done d ON d.item_id = l.item_id""",
            # Items that were skipped or flagged (effective events), with their notes: the export gives them
            # a row even when nobody labelled them.
            """CREATE VIEW skips_and_flags AS
            SELECT item_id,
                   count(*) FILTER (WHERE kind = 'flag') AS n_flags,
                   count(*) FILTER (WHERE kind = 'skip') AS n_skips,
                   list(actor ORDER BY event_id) AS actors,
                   list(kind ORDER BY event_id) AS kinds,
                   nullif(list_filter(list(note ORDER BY event_id), lambda x: x IS NOT NULL), []) AS notes,
                   max(event_id) AS last_event, max(ts) AS last_at
            FROM event_log e
            ANTI JOIN (SELECT target_event FROM event_log WHERE kind = 'undo' AND target_event IS NOT NULL) u
                ON u.target_event = e.event_id
            WHERE e.kind IN ('skip', 'flag')
            GROUP BY item_id""",
        ],
    )
)
MIGRATIONS.append(
    (
        4,
        "team mode: client message ids on decisions",
        [
            # Every decision made through the project API carries the client's message id, so a request
            # resent after a dropped connection is stored once (the service looks ids up before writing).
            "ALTER TABLE event_log ADD COLUMN client_msg_id VARCHAR",
        ],
    )
)
MIGRATIONS.append(
    (
        5,
        "live measurement: one row per trained model version",
        [
            # Recomputed after each retrain (core/loop/al_round.py commit_round, core/measure/signs.py): what the
            # metrics pane, status, check and report read as curves over time.
            """CREATE TABLE measurements (
            version INTEGER PRIMARY KEY,
            created_at TIMESTAMPTZ NOT NULL,
            n_labels INTEGER NOT NULL,
            n_al INTEGER NOT NULL,
            n_audit INTEGER NOT NULL,
            n_cold INTEGER NOT NULL,
            compute_seconds DOUBLE NOT NULL,   -- cumulative retrain compute up to this version
            data JSON NOT NULL)""",
        ],
    )
)


def _log_decisions_v6() -> str:
    """Migration 2's log_decisions with two fixes in its branch for items several people labelled: the
    queue provenance (batch, strategy, score, audit, the model's suggestion) comes from the latest label
    event, not from an adjudication (which has none), and an unresolved item names nobody as its decider."""
    old = next(q for q in MIGRATIONS[1][2] if q.startswith("CREATE VIEW log_decisions"))
    before = """d.kind AS deciding_kind, d.actor AS decided_by_actor, d.ts AS decided_at, d.model_version,
                   d.suggestion, d.shown_probs, d.suggestion_hidden, d.batch_id, d.strategy, d.score, d.rank,
                   d.percentile, d.audit
            FROM several s LEFT JOIN adjudicated a USING (item_id)
            JOIN ev d ON d.event_id = coalesce(a.event_id, s.last_label)"""
    after = """d.kind AS deciding_kind,
                   CASE WHEN a.item_id IS NULL AND s.lo <> s.hi THEN NULL ELSE d.actor END AS decided_by_actor,
                   CASE WHEN a.item_id IS NULL AND s.lo <> s.hi THEN NULL ELSE d.ts END AS decided_at,
                   p.model_version, p.suggestion, p.shown_probs, p.suggestion_hidden, p.batch_id, p.strategy,
                   p.score, p.rank, p.percentile, p.audit
            FROM several s LEFT JOIN adjudicated a USING (item_id)
            JOIN ev d ON d.event_id = coalesce(a.event_id, s.last_label)
            JOIN ev p ON p.event_id = s.last_label"""
    assert old.count(before) == 1
    return old.replace(before, after)


def _final_decisions_v6() -> str:
    """Migration 2's final_decisions, where an unresolved item no longer falls back to the import's actor
    and time as its decider."""
    old = next(q for q in MIGRATIONS[1][2] if q.startswith("CREATE VIEW final_decisions"))
    fixes = {
        "coalesce(f.decided_by_actor, m.actor) AS decided_by_actor": (
            "CASE WHEN f.item_id IS NULL THEN m.actor ELSE f.decided_by_actor END AS decided_by_actor"
        ),
        "coalesce(f.decided_at, i.imported_at) AS decided_at": (
            "CASE WHEN f.item_id IS NULL THEN i.imported_at ELSE f.decided_at END AS decided_at"
        ),
    }
    for before, after in fixes.items():
        assert old.count(before) == 1
        old = old.replace(before, after)
    return old


MIGRATIONS.append(
    (
        6,
        "export: adjudicated items keep their queue provenance; unresolved items have no decider",
        ["DROP VIEW log_decisions", _log_decisions_v6(), "DROP VIEW final_decisions", _final_decisions_v6()],
    )
)


def _with_live_undos() -> list[str]:
    """Migration 7: an undo can itself be undone (a reviewer takes back a send-back, whose undo events
    then no longer take the annotators' labels back). ``live_undos`` lists the undo events still
    standing, and every view that read the raw undo events reads it instead."""
    raw = {
        "ANTI JOIN (SELECT target_event FROM event_log WHERE kind = 'undo' AND target_event IS NOT NULL) u": (
            "ANTI JOIN (SELECT target_event FROM live_undos) u"
        ),
        "SEMI JOIN (SELECT target_event FROM event_log WHERE kind = 'undo') u": (
            "SEMI JOIN (SELECT target_event FROM live_undos) u"
        ),
        "SELECT target_event AS event_id FROM event_log WHERE kind = 'undo' AND target_event IS NOT NULL": (
            "SELECT target_event AS event_id FROM live_undos"
        ),
    }

    def fixed(sql: str) -> str:
        for before, after in raw.items():
            sql = sql.replace(before, after)
        assert "kind = 'undo'" not in sql, sql[:80]
        return sql

    def view(name: str, migration: int) -> str:
        return next(q for q in MIGRATIONS[migration - 1][2] if q.startswith(f"CREATE VIEW {name} "))

    return [
        """CREATE VIEW live_undos AS
            SELECT u.event_id, u.target_event FROM event_log u
            ANTI JOIN (SELECT target_event FROM event_log WHERE kind = 'undo' AND target_event IS NOT NULL) r
                ON r.target_event = u.event_id
            WHERE u.kind = 'undo' AND u.target_event IS NOT NULL""",
        "DROP VIEW effective_events",
        fixed(view("effective_events", 2)),
        "DROP VIEW log_items",
        fixed(view("log_items", 2)),
        "DROP VIEW log_decisions",
        fixed(_log_decisions_v6()),
        "DROP VIEW skips_and_flags",
        fixed(view("skips_and_flags", 3)),
    ]


MIGRATIONS.append((7, "an undo can be undone: a reviewer takes back a send-back", _with_live_undos()))
SCHEMA_VERSION = MIGRATIONS[-1][0]


def store_error_text(exc: BaseException) -> str:
    """The first line of a DuckDB or OS error, for a one-sentence message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


_STORE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT}


def is_io_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk failing under the store (full, read-only, an I/O error), as opposed
    to a bad value or a bug: only these make the store refuse writes until the disk is back."""
    if isinstance(exc, OSError):
        return exc.errno in _STORE_ERRNOS
    if isinstance(exc, (duckdb.IOException, duckdb.FatalException)):
        return True
    # DuckDB reports a full disk at commit as "Failed to commit: Could not write file ..."
    return isinstance(exc, duckdb.TransactionException) and "commit" in str(exc).lower()


def as_store_error(exc: BaseException) -> StoreError | None:
    """A StoreError for failures of the project store's disk (full, read-only, an I/O error); None for
    anything else."""
    if isinstance(exc, StoreError):
        return exc
    if is_io_failure(exc):
        return StoreError(f"the project store failed ({store_error_text(exc)}); every decision before it is saved.")
    return None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """Owns the DuckDB connection of one project. Use ``Store.open(dir)``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path | None):
        self.con = con
        self.path = path
        self._lock = threading.RLock()
        self._next_event_id: int | None = None
        # DuckDB would draw a progress bar on stdout during long queries, under our TUI or into a pipe.
        con.execute("SET enable_progress_bar = false")

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, project_dir: Path | str, *, create: bool = False, read_only: bool = False) -> "Store":
        project_dir = Path(project_dir)
        db = project_dir / DB_NAME
        if not create and not db.exists():
            raise ProjectError(
                f"{db} does not exist; is {project_dir} a labelloop project? (create one with: labelloop init {project_dir} --labels a,b)"
            )
        try:
            con = duckdb.connect(str(db), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise ProjectError(
                    f"{db} is open in another labelloop process (DuckDB allows one writer per file); "
                    "close it, or use team mode (labelloop serve) for several users."
                ) from None
            raise ProjectError(f"cannot open {db}: {exc}") from None
        store = cls(con, db)
        if not read_only:
            try:
                store.migrate()
            except BaseException:
                con.close()
                raise
        return store

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for another thread (DuckDB connections are not thread-safe)."""
        return self.con.cursor()

    # -- migrations --------------------------------------------------------
    def schema_version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()[0]
        if not exists:
            return 0
        return self.con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]

    def migrate(self) -> None:
        with self._lock:
            # A DuckDB file that holds tables but no labelloop schema is someone else's: refuse before
            # writing anything to it (not even the migrations table).
            tables = [
                r[0]
                for r in self.con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
                ).fetchall()
            ]
            if tables and "schema_migrations" not in tables:
                shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
                raise ProjectError(
                    f"{self.path} is a DuckDB file that labelloop did not create (it holds {shown}); "
                    "it was left untouched. Move it away, or create the project in another folder."
                )
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER, name VARCHAR, applied_at TIMESTAMPTZ)"
            )
            current = self.schema_version()
            if current > SCHEMA_VERSION:
                raise ProjectError(
                    f"{self.path} was written by a newer labelloop (schema {current} > {SCHEMA_VERSION}); upgrade labelloop."
                )
            for version, name, statements in MIGRATIONS:
                if version <= current:
                    continue
                with self.transaction():
                    for sql in statements:
                        self.con.execute(sql)
                    self.con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()])

    # -- transactions ------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            else:
                try:
                    self.con.execute("COMMIT")
                except duckdb.Error:  # e.g. a full disk: leave no transaction open behind a failed commit
                    try:
                        self.con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass
                    raise

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self._lock:
            row = self.con.execute(sql, params or []).fetchone()
        return row[0] if row else None

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self._lock:
            return self.con.execute(sql, params or []).fetchall()

    def dicts(self, sql: str, params: Sequence[Any] | None = None) -> list[dict]:
        with self._lock:
            cur = self.con.execute(sql, params or [])
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, r)) for r in cur.fetchall()]

    # -- events ------------------------------------------------------------
    def next_event_id(self) -> int:
        return self.scalar("SELECT coalesce(max(event_id), 0) + 1 FROM events")

    def append_event(self, item_id: str, kind: str, actor: str, **fields: Any) -> int:
        """Append one event; it is committed when this returns (a decision is saved when it is made).

        Event ids come from an in-process counter (this process is the file's only writer), so a
        decision costs one INSERT and no scan of the log."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        unknown = set(fields) - EVENT_FIELDS
        if unknown:
            raise ValueError(f"unknown event fields {sorted(unknown)}")
        fields = {k: v for k, v in fields.items() if v is not None}
        if fields.get("labels") is not None:
            fields["labels"] = sorted(fields["labels"])  # sorted lists: equal lists mean agreement
        if isinstance(fields.get("shown_probs"), dict):
            fields["shown_probs"] = json.dumps(fields["shown_probs"])
        ts = fields.pop("ts", None) or utcnow()
        cols = ["event_id", "item_id", "kind", "actor", "ts", *fields.keys()]
        with self._lock:
            try:
                if self._next_event_id is None:
                    self._next_event_id = self.next_event_id()
                event_id = self._next_event_id
                fault_error("store-append", duckdb.IOException("Could not write file: No space left on device"))
                self.con.execute(
                    f"INSERT INTO event_log ({', '.join(cols)}) VALUES ({', '.join(['?'] * len(cols))})",
                    [event_id, item_id, kind, actor, ts, *fields.values()],
                )
            except duckdb.Error as exc:
                if not is_io_failure(exc):
                    raise
                raise StoreError(
                    f"the project store {self.path or '(memory)'} could not save this decision "
                    f"({store_error_text(exc)}); every decision before it is saved."
                ) from exc
            self._next_event_id += 1
        return event_id

    def open_queue(self, n: int | None = None) -> list[dict]:
        """The ``open_queue`` view (latest batch minus decided items) with each item's text, in queue
        order: what ``labelloop next`` and the workstation's queue show."""
        limit = f"LIMIT {int(n)}" if n else ""
        return self.dicts(f"""
            SELECT q.position, q.item_id, i.text, i.metadata, q.strategy, q.score, q.rank, q.percentile, q.audit,
                   q.model_version, q.probs, q.batch_id
            FROM open_queue q JOIN items i ON i.id = q.item_id
            ORDER BY q.position {limit}""")

    # -- what the project service reads (core/api/service.py) ------------------------------
    def latest_batch_id(self) -> int | None:
        return self.scalar("SELECT max(batch_id) FROM batches")

    def queue_rows(self, item_ids: list[str] | None = None, batch_id: int | None = None) -> list[dict]:
        """Queue rows with each item's text: one batch in queue order, or the latest queue row of each
        of ``item_ids`` (any batch)."""
        cols = """q.position, q.item_id, i.text, i.metadata, q.strategy, q.score, q.rank, q.percentile, q.audit,
                  q.model_version, q.probs, q.batch_id"""
        if batch_id is not None:
            return self.dicts(
                f"SELECT {cols} FROM queue q JOIN items i ON i.id = q.item_id WHERE q.batch_id = ? ORDER BY q.position",
                [batch_id],
            )
        if not item_ids:
            return []
        return self.dicts(
            f"""
            SELECT {cols} FROM queue q JOIN items i ON i.id = q.item_id
            JOIN (SELECT item_id, max(batch_id) AS batch_id FROM queue WHERE item_id IN (SELECT unnest(?::VARCHAR[]))
                  GROUP BY item_id) latest USING (item_id, batch_id)""",
            [item_ids],
        )

    def decisions_on(self, item_ids: list[str] | None = None) -> list[tuple]:
        """(item_id, actor, kind, labels) of every effective label, skip and flag on ``item_ids``; with None, on
        every item that was ever queued (the assignment state a server rebuilds when it starts)."""
        if item_ids is None:
            return self.rows("""
                SELECT e.item_id, e.actor, e.kind, array_to_string(e.labels, '|') FROM effective_events e
                    SEMI JOIN (SELECT DISTINCT item_id FROM queue) q ON q.item_id = e.item_id
                WHERE e.kind IN ('label', 'skip', 'flag') AND coalesce(e.via, '') <> 'import'
                ORDER BY e.event_id""")
        if not item_ids:
            return []
        return self.rows(
            """
            SELECT item_id, actor, kind, array_to_string(labels, '|') FROM effective_events
            WHERE kind IN ('label', 'skip', 'flag') AND coalesce(via, '') <> 'import'
              AND item_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY event_id""",
            [item_ids],
        )

    def client_messages(self) -> list[tuple]:
        """(actor, client_msg_id, event_id, kind) of every event written through the project API."""
        return self.rows("SELECT actor, client_msg_id, event_id, kind FROM event_log WHERE client_msg_id IS NOT NULL")

    def latest_decision(self, actor: str) -> dict | None:
        """``actor``'s latest label, skip or flag that is still standing (what undo takes back)."""
        rows = self.dicts(
            """
            SELECT e.event_id, e.item_id, e.kind, e.batch_id, e.suggestion_hidden
            FROM effective_events e
            WHERE e.actor = ? AND e.kind IN ('label', 'skip', 'flag') AND coalesce(e.via, '') <> 'import'
            ORDER BY e.event_id DESC LIMIT 1""",
            [actor],
        )
        return rows[0] if rows else None

    def session_decisions(self, session_id: str, actor: str) -> int:
        """Labels, skips and flags standing from one workstation session."""
        return int(
            self.scalar(
                """SELECT count(*) FROM effective_events WHERE session_id = ? AND actor = ?
                                  AND kind IN ('label', 'skip', 'flag')""",
                [session_id, actor],
            )
            or 0
        )

    def item_exists(self, item_id: str) -> bool:
        return bool(self.scalar("SELECT count(*) FROM items WHERE id = ?", [item_id]))

    def unlabelled_pool(self) -> int:
        """Pool items nobody has decided (a retrain can still queue them)."""
        return self.scalar("""SELECT count(*) FROM items i ANTI JOIN decided_items d ON d.item_id = i.id
                              WHERE i.split = 'pool'""")

    # -- what the features are built from (core/engine/features.py takes these arrays) ---------------
    def items_state(self) -> tuple[int, int, int]:
        """(count, highest ord, latest import): changes whenever items are added."""
        return tuple(self.rows("SELECT count(*), coalesce(max(ord), 0), coalesce(max(import_id), 0) FROM items")[0])

    def item_arrays(self) -> tuple:
        """Every item in ord order: ids, ords, splits (object arrays and int64), texts (a list) and
        DuckDB's hash of each text (uint64)."""
        import numpy as np

        rows = self.rows("SELECT id, ord, split, text, hash(text) FROM items ORDER BY ord")
        ids = np.array([r[0] for r in rows], dtype=object)
        ords = np.array([r[1] for r in rows], dtype=np.int64)
        splits = np.array([r[2] for r in rows], dtype=object)
        texts = [r[3] for r in rows]
        text_hash = np.array([r[4] for r in rows], dtype=np.uint64)
        return ids, ords, splits, texts, text_hash

    def item_keys(self) -> tuple:
        """Every item in ord order without its text: ids, ords, splits and DuckDB's hash of each text."""
        import numpy as np

        with self._lock:
            d = self.con.execute("SELECT id, ord, split, hash(text) AS h FROM items ORDER BY ord").fetchnumpy()
        return (
            np.asarray(d["id"], dtype=object),
            np.asarray(d["ord"], dtype=np.int64),
            np.asarray(d["split"], dtype=object),
            np.asarray(d["h"], dtype=np.uint64),
        )

    def snapshot_items(self, path: Path) -> tuple[int, int, int]:
        """Write what ``item_arrays`` gives to a Parquet file at ``path`` (for a process that cannot
        open the store), inside DuckDB: no text passes through Python here. Returns the items' state
        (``items_state``) the file holds, read in the same transaction."""
        quoted = str(path).replace("'", "''")
        with self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                state = self.con.execute(
                    "SELECT count(*), coalesce(max(ord), 0), coalesce(max(import_id), 0) FROM items"
                ).fetchone()
                self.con.execute(
                    "COPY (SELECT id, ord, split, text, hash(text) AS h FROM items ORDER BY ord) "
                    f"TO '{quoted}' (FORMAT parquet)"
                )
            finally:
                self.con.execute("COMMIT")
        return tuple(state)

    def invalidate_caches(self) -> None:
        """Called after bulk writes (import) so per-process caches are rebuilt."""
        self._next_event_id = None

    def item_count(self) -> int:
        return self.scalar("SELECT count(*) FROM items")
