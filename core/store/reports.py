"""Read models of the store: what ``labelloop status`` shows (a dict; core/text/status.py words it) and
what the metrics pane reads (core/loop/metrics.py computes from it)."""

from __future__ import annotations

import json
from typing import Any

from labelloop.core.store.project import Project


def arm_counts(project: Project) -> dict:
    """Human decisions (labels, skips, flags not undone) by the arm that queued the item: the AL
    strategy, the random-audit control arm, or the cold start; and the audit arm's share."""
    row = project.store.rows("""
        SELECT count(*) FILTER (WHERE audit),
               count(*) FILTER (WHERE NOT coalesce(audit, false) AND strategy LIKE 'cold start%'),
               count(*) FILTER (WHERE NOT coalesce(audit, false) AND coalesce(strategy, '') NOT LIKE 'cold start%'),
               count(*),
               count(*) FILTER (WHERE kind = 'label' AND audit),
               count(*) FILTER (WHERE kind = 'label' AND NOT coalesce(audit, false)
                                AND coalesce(strategy, '') NOT LIKE 'cold start%')
        FROM effective_events
        WHERE kind IN ('label', 'skip', 'flag') AND coalesce(via, '') <> 'import'
          AND coalesce(strategy, '') <> 'gold'   -- gold items measure annotators, not the arms""")[0]
    audit, cold, al, total, audit_labels, al_labels = (int(x or 0) for x in row)
    return {
        "al": al,
        "audit": audit,
        "cold_start": cold,
        "total": total,
        "audit_share": audit / total if total else 0.0,
        "al_labels": al_labels,
        "audit_labels": audit_labels,
    }


def project_status(project: Project) -> dict[str, Any]:
    s = project.store
    # final_labels is a view over the whole event log: compute it once for every count below.
    s.con.execute("CREATE OR REPLACE TEMP TABLE status_final AS SELECT item_id, labels, decided_by FROM final_labels")
    splits = dict(s.rows("SELECT split, count(*) FROM items GROUP BY split ORDER BY split"))
    final = s.rows("""
        SELECT coalesce(array_to_string(labels, '|'), '(unresolved)'), count(*)
        FROM status_final GROUP BY 1 ORDER BY 1""")
    gold = s.rows("""
        SELECT split, array_to_string(gold_label, '|'), count(*) FROM items
        WHERE gold_label IS NOT NULL GROUP BY ALL ORDER BY ALL""")
    decided_by = dict(s.rows("SELECT decided_by, count(*) FROM status_final GROUP BY 1 ORDER BY 1"))
    annotators = s.dicts("""
        SELECT actor,
               count(*) FILTER (WHERE kind = 'label') AS labels,
               count(*) FILTER (WHERE kind = 'skip') AS skips,
               count(*) FILTER (WHERE kind = 'flag') AS flags,
               (SELECT count(*) FROM events u WHERE u.kind = 'undo' AND u.actor = e.actor) AS undone,
               median(duration_ms) FILTER (WHERE kind = 'label') AS median_ms,
               max(ts) AS last_at
        FROM effective_events e WHERE coalesce(via, '') <> 'import' AND kind IN ('label', 'skip', 'flag')
        GROUP BY actor ORDER BY actor""")
    for a in annotators:
        a["last_at"] = a["last_at"].isoformat() if a["last_at"] else None
    pool_unlabelled = s.scalar("""
        SELECT count(*) FROM items i WHERE split = 'pool'
          AND NOT EXISTS (SELECT 1 FROM status_final f WHERE f.item_id = i.id)""")
    queue = s.scalar("SELECT count(*) FROM open_queue")  # the store's one definition of undecided
    queue_audit = s.scalar("SELECT count(*) FROM open_queue WHERE audit")
    corrections = dict(
        s.rows("""SELECT error_category, count(*) FROM effective_events
                                 WHERE kind = 'label' AND via = 'correction' GROUP BY 1 ORDER BY 2 DESC, 1""")
    )
    arms = arm_counts(project)
    model = s.dicts("""SELECT version, created_at, n_train, calibration, temperature, metrics, origin
                       FROM models ORDER BY version DESC LIMIT 1""")
    latest = None
    if model:
        m = model[0]
        latest = {
            "version": m["version"],
            "created_at": m["created_at"].isoformat(),
            "n_train": m["n_train"],
            "calibration": m["calibration"],
            "temperature": m["temperature"],
            "origin": m["origin"],
            "test_metrics": json.loads(m["metrics"]) if m["metrics"] else None,
        }
    s.con.execute("DROP TABLE status_final")
    return {
        "project": project.config.name,
        "labels": project.config.labels,
        "items": {"total": sum(splits.values()), **{k: splits.get(k, 0) for k in ("pool", "test", "gold")}},
        "pool_unlabelled": pool_unlabelled,
        "final_labels": {k: v for k, v in final},
        "decided_by": decided_by,
        "gold_labels": [{"split": sp, "label": lab, "count": n} for sp, lab, n in gold],
        "annotators": annotators,
        "queue": queue,
        "queue_audit": queue_audit,
        "arms": arms,
        "audit_share_target": project.config.audit_share,
        "corrections": corrections,
        "events": s.scalar("SELECT count(*) FROM events"),
        "latest_model": latest,
    }


def metrics_rows(store) -> dict:
    """What the metrics pane reads from the store (core/loop/metrics.py computes the rest)."""
    return {
        "models": store.dicts("""SELECT version, n_train, metrics, created_at FROM models
                                 WHERE origin = 'trained' ORDER BY version"""),
        "distribution": dict(
            store.rows("""SELECT coalesce(array_to_string(labels, '|'), '(unresolved)'), count(*)
                                           FROM final_labels GROUP BY 1 ORDER BY 1""")
        ),
        "throughput": store.dicts("""
            SELECT actor, count(*) AS decisions,
                   count(*) FILTER (WHERE ts > now() - INTERVAL 1 HOUR) AS last_hour,
                   median(duration_ms) AS median_ms
            FROM effective_events WHERE kind IN ('label', 'skip', 'flag') AND coalesce(via, '') <> 'import'
            GROUP BY actor ORDER BY decisions DESC"""),
        "corrections": dict(
            store.rows("""SELECT error_category, count(*) FROM effective_events
                                          WHERE error_category IS NOT NULL GROUP BY 1 ORDER BY 2 DESC""")
        ),
        "batch": store.dicts(
            "SELECT batch_id, strategy, size, n_audit, signals FROM batches ORDER BY batch_id DESC LIMIT 1"
        ),
        # anchoring: the human label against the model's top label, with and without seeing it
        "anchoring": store.rows("""
            SELECT e.suggestion_hidden, e.labels[1], q.probs FROM effective_events e
            JOIN queue q ON q.batch_id = e.batch_id AND q.item_id = e.item_id
            WHERE e.kind = 'label' AND e.suggestion_hidden IS NOT NULL AND q.probs IS NOT NULL"""),
    }


def arm_label_rows(store) -> list[tuple]:
    """(ord, first label, audit, strategy) of every labelled pool item, in deciding order."""
    return store.rows("""
        SELECT i.ord, f.labels[1], coalesce(e.audit, false), e.strategy
        FROM final_labels f JOIN items i ON i.id = f.item_id JOIN events e ON e.event_id = f.deciding_event
        WHERE i.split = 'pool' AND f.labels IS NOT NULL ORDER BY f.deciding_event""")


def annotation_ratings(store) -> tuple[dict, dict]:
    """Each annotator's current label of each pool item they labelled (imports excluded), as
    ``{item_id: {annotator: "label|label"}}``, and each item's arm: ``audit`` (the random-audit
    control), ``cold`` (the cold start, before any model) or ``al`` (chosen by the strategy)."""
    ratings: dict = {}
    arms: dict = {}
    for item_id, actor, labels, is_audit, strategy in store.rows("""
            SELECT a.item_id, a.actor, array_to_string(a.labels, '|'), coalesce(a.audit, false), a.strategy
            FROM annotations a JOIN items i ON i.id = a.item_id
            WHERE i.split = 'pool' AND coalesce(a.via, '') <> 'import' AND a.labels IS NOT NULL"""):
        ratings.setdefault(item_id, {})[actor] = labels
        if is_audit:
            arms[item_id] = "audit"
        elif arms.get(item_id) != "audit":
            arms[item_id] = "cold" if not strategy or strategy.startswith("cold start") else "al"
    return ratings, arms


def measurements(store) -> list[dict]:
    """Every trained model version's live measurement, oldest first, with its data parsed."""
    out = []
    for r in store.dicts("""SELECT version, created_at, n_labels, n_al, n_audit, n_cold, compute_seconds, data
                            FROM measurements ORDER BY version"""):
        data = json.loads(r.pop("data"))
        out.append({**r, **data})
    return out


def duplicates_and_leakage(store) -> dict:
    """Exact-text duplicates inside the pool and pool texts that also stand in the test split."""
    pool_n, pool_distinct = store.rows("SELECT count(*), count(DISTINCT text) FROM items WHERE split = 'pool'")[0]
    leaked = store.scalar("""SELECT count(*) FROM items p WHERE p.split = 'pool'
                             AND EXISTS (SELECT 1 FROM items t WHERE t.split = 'test' AND t.text = p.text)""")
    examples = [
        r[0]
        for r in store.rows("""SELECT p.id FROM items p WHERE p.split = 'pool'
                AND EXISTS (SELECT 1 FROM items t WHERE t.split = 'test' AND t.text = p.text) ORDER BY p.ord LIMIT 3""")
    ]
    return {
        "pool": int(pool_n),
        "pool_duplicates": int(pool_n - pool_distinct),
        "leaked": int(leaked or 0),
        "leaked_examples": examples,
    }


def correction_reasons(store) -> list[tuple]:
    """(error category, whether the item was AL-selected) of every effective correction."""
    return store.rows("""
        SELECT error_category, NOT coalesce(audit, false) AND coalesce(strategy, '') NOT LIKE 'cold start%'
               AND coalesce(strategy, '') <> 'gold'
        FROM effective_events WHERE kind = 'label' AND via = 'correction'""")


def retrain_seconds(store) -> list[tuple]:
    """(version, train seconds, n_train) of every trained model."""
    return store.rows("SELECT version, train_seconds, n_train FROM models WHERE origin = 'trained' ORDER BY version")


def latest_measurement(store) -> dict | None:
    """The newest version's measurement (cheap: one row)."""
    rows = store.dicts("""SELECT version, n_labels, n_al, n_audit, n_cold, data FROM measurements
                          ORDER BY version DESC LIMIT 1""")
    if not rows:
        return None
    r = rows[0]
    return {**{k: v for k, v in r.items() if k != "data"}, **json.loads(r["data"])}
