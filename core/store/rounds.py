"""What a round of the loop reads from and writes to the store (plan and commit in core/loop/al_round.py;
the computing in between sees none of it), and the models table (core/loop/transfer.py too)."""

from __future__ import annotations

import json

import numpy as np

from labelloop.core.store import Store, utcnow


# -- reads of plan_round ------------------------------------------------------------------------
def labelled(store: Store) -> list:
    """(ord, labels, strategy, audit) of every labelled pool item, in deciding order."""
    return [
        (o, list(lab), st, a)
        for o, lab, st, a in store.rows(
            """SELECT i.ord, f.labels, f.strategy, f.audit FROM final_decisions f JOIN items i ON i.id = f.item_id
           WHERE i.split = 'pool' AND f.labels IS NOT NULL ORDER BY f.deciding_event"""
        )
    ]


def test_split(store: Store) -> list:
    """(ord, reference labels) of the held-out test items."""
    return [
        (o, list(lab))
        for o, lab in store.rows(
            "SELECT ord, gold_label FROM items WHERE split = 'test' AND gold_label IS NOT NULL ORDER BY ord"
        )
    ]


def decided_ords(store: Store) -> list:
    return [r[0] for r in store.rows("SELECT i.ord FROM decided_items d JOIN items i ON i.id = d.item_id")]


def keyword_ords(store: Store, query: str) -> list:
    """Pool items whose text matches the (checked) seed query."""
    return [
        r[0] for r in store.rows("SELECT ord FROM items WHERE split = 'pool' AND regexp_matches(text, ?, 'i')", [query])
    ]


def open_audit_ords(store: Store) -> list:
    """The current batch's audit items nobody has decided yet (a retrain carries them)."""
    return [
        r[0]
        for r in store.rows(
            "SELECT i.ord FROM open_queue q JOIN items i ON i.id = q.item_id WHERE q.audit ORDER BY q.position"
        )
    ]


def stop_set_ords(store: Store, size: int) -> np.ndarray:
    """A fixed sample of pool items (by a hash of the id)."""
    rows = store.rows(f"SELECT ord FROM items WHERE split = 'pool' ORDER BY hash(id), id LIMIT {int(size)}")
    return np.array(sorted(r[0] for r in rows), dtype=np.int64)


def audit_label_count(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM final_decisions WHERE audit AND labels IS NOT NULL") or 0)


# -- the models table ------------------------------------------------------------------------------
def model_artifact(store: Store, version: int) -> str | None:
    """The artifact file name of a model version; None when the version does not exist."""
    row = store.rows("SELECT artifact FROM models WHERE version = ?", [version])
    return (row[0][0] or "") if row else None


def latest_model_version(store: Store) -> int | None:
    return store.scalar("SELECT max(version) FROM models")


def latest_trained_version(store: Store) -> int | None:
    return store.scalar("SELECT max(version) FROM models WHERE origin = 'trained'")


def latest_imported_version(store: Store) -> int | None:
    return store.scalar("SELECT max(version) FROM models WHERE origin = 'imported'")


def recent_stop_kappas(store: Store, n: int) -> list:
    """The stop-set kappa of the last n trained models, newest first (None where not measured)."""
    return [
        json.loads(m).get("stop_kappa") if m else None
        for (m,) in store.rows("SELECT metrics FROM models WHERE origin = 'trained' ORDER BY version DESC LIMIT ?", [n])
    ]


def model_metrics(store: Store, version: int) -> dict | None:
    m = store.scalar("SELECT metrics FROM models WHERE version = ?", [version])
    return json.loads(m) if m else None


def next_model_version(store: Store) -> int:
    return int(store.scalar("SELECT coalesce(max(version), 0) + 1 FROM models"))


def insert_model(
    store: Store,
    version: int,
    *,
    n_train: int,
    classes: list,
    calibration: str,
    temperature: float | None,
    train_seconds: float | None,
    metrics: dict | None,
    artifact: str,
    origin: str,
) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                version,
                utcnow(),
                n_train,
                list(classes),
                calibration,
                temperature,
                train_seconds,
                None,
                json.dumps(metrics) if metrics is not None else None,
                artifact,
                origin,
            ],
        )


# -- writes of commit_round ------------------------------------------------------------------------------
def insert_batch(
    store: Store,
    *,
    model_version: int | None,
    strategy: str,
    size: int,
    n_audit: int,
    pool_size: int,
    signals: dict,
    queue_columns: list[list],
    new_items: dict | None = None,
) -> int:
    """A new batch and its queue rows, in one transaction. ``queue_columns``: position, item_id,
    strategy, score, rank, percentile, audit, model_version, probs (JSON), each a list. ``new_items``:
    rows of an external pool this batch brings into the project (``insert_pool_items``), in the same
    transaction."""
    with store.transaction() as con:
        if new_items:
            insert_pool_items(con, new_items)
        batch_id = con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchone()[0]
        con.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [batch_id, utcnow(), model_version, strategy, size, n_audit, pool_size, json.dumps(signals)],
        )
        if queue_columns and queue_columns[0]:
            # one statement over column lists: executemany binds row by row, holding the interpreter
            # lock for about 0.2 s per 600 rows (measured), which the workstation's screen felt
            n = len(queue_columns[0])
            con.execute(
                """INSERT INTO queue SELECT unnest($1::INTEGER[]), unnest($2::INTEGER[]),
                               unnest($3::VARCHAR[]), unnest($4::VARCHAR[]), unnest($5::DOUBLE[]),
                               unnest($6::INTEGER[]), unnest($7::DOUBLE[]), unnest($8::BOOLEAN[]),
                               unnest($9::INTEGER[]), unnest($10::VARCHAR[])""",
                [[batch_id] * n, *[list(c) for c in queue_columns]],
            )
    return batch_id


def insert_measurement(
    store: Store,
    version: int,
    *,
    n_labels: int,
    n_al: int,
    n_audit: int,
    n_cold: int,
    compute_seconds: float,
    data: dict,
) -> None:
    """The live measurement of a trained model version (cumulative compute includes this retrain)."""
    prev = store.scalar("SELECT coalesce(sum(train_seconds), 0) FROM models WHERE version < ?", [version]) or 0.0
    store.con.execute(
        "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            version,
            utcnow(),
            n_labels,
            n_al,
            n_audit,
            n_cold,
            float(prev) + float(compute_seconds),
            json.dumps(_clean(data), allow_nan=False),
        ],
    )


def _clean(v):
    """JSON-safe: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if np.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


POOL_SOURCE = "pool:"  # items.source_file of an external pool's rows: "pool:" + the file's path in the pool


def insert_pool_items(con, items: dict) -> int:
    """An external pool's rows queued for the first time become items (split 'pool'): ``items`` holds
    columns id, text, metadata (JSON or None), file (the partition's path in the pool) and row (1-based
    in that file). Ids already in the project are left as they are. One import row names the pool."""
    n = len(items["id"])
    if not n:
        return 0
    import_id = con.execute("SELECT coalesce(max(import_id), 0) + 1 FROM imports").fetchone()[0]
    now = utcnow()
    con.execute(
        """CREATE OR REPLACE TEMP TABLE ll_pool_new AS
           SELECT unnest($1::VARCHAR[]) AS id, unnest($2::VARCHAR[]) AS text, unnest($3::VARCHAR[]) AS metadata,
                  unnest($4::VARCHAR[]) AS file, unnest($5::BIGINT[]) AS row, generate_subscripts($1::VARCHAR[], 1) AS k""",
        [items["id"], items["text"], items["metadata"], items["file"], items["row"]],
    )
    added = con.execute(
        f"""INSERT INTO items (id, ord, text, metadata, split, source_labels, source_file, source_row, import_id,
                               imported_at, import_event)
            SELECT n.id, (SELECT coalesce(max(ord), -1) FROM items) + row_number() OVER (ORDER BY n.k), n.text,
                   n.metadata, 'pool', NULL, '{POOL_SOURCE}' || n.file, n.row, ?, ?, NULL
            FROM ll_pool_new n WHERE n.id NOT IN (SELECT id FROM items)""",
        [import_id, now],
    ).fetchone()
    added = int(added[0]) if added else 0
    con.execute(
        """INSERT INTO imports (import_id, source_file, format, rows_read, rows_imported, rows_rejected,
                                labelled, imported_at, actor, rows_deduped) VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, 0)""",
        [import_id, items.get("folder", "external pool"), "external pool", n, added, now, "labelloop"],
    )
    con.execute("DROP TABLE ll_pool_new")
    return added


def pool_positions(store: Store, which: str) -> list[tuple[str, int]]:
    """(file, 1-based row) in the external pool of the project's items from it: ``which`` = "decided"
    (labelled, skipped or flagged: no longer candidates) or "open_audit" (the current batch's undecided
    random-audit items, which a retrain carries)."""
    if which == "decided":
        sql = "SELECT i.source_file, i.source_row FROM decided_items d JOIN items i ON i.id = d.item_id"
    else:
        sql = "SELECT i.source_file, i.source_row FROM open_queue q JOIN items i ON i.id = q.item_id WHERE q.audit ORDER BY q.position"
    return [
        (f[len(POOL_SOURCE) :], int(r)) for f, r in store.rows(sql) if isinstance(f, str) and f.startswith(POOL_SOURCE)
    ]


def item_ids(store: Store) -> list[str]:
    return [r[0] for r in store.rows("SELECT id FROM items")]
