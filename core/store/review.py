"""What review reads and writes: every annotator's version of an item, the flags, the model's view
when the item was queued, and whether a reviewer has decided it (issue: agreement and review)."""

from __future__ import annotations

import json

from labelloop.core.store import Store


def candidates(store: Store) -> list[dict]:
    """Items that may need a reviewer: labelled by two or more annotators, or flagged; with each
    annotator's current label, the flags, the model's probabilities at queue time, and whether an
    adjudication stands."""
    return store.dicts("""
        WITH ann AS (
            SELECT item_id, list(actor ORDER BY event_id) AS actors,
                   list(array_to_string(labels, '|') ORDER BY event_id) AS labels, max(event_id) AS last_event
            FROM annotations WHERE coalesce(via, '') <> 'import' AND labels IS NOT NULL GROUP BY item_id
        ),
        flags AS (SELECT item_id, n_flags, notes FROM skips_and_flags WHERE n_flags > 0),
        adj AS (SELECT item_id, max(event_id) AS event_id FROM effective_events WHERE kind = 'adjudicate'
                GROUP BY item_id),
        -- pool items only: gold and test items have reference labels (gold measures the annotators)
        cand AS (SELECT item_id FROM (SELECT item_id FROM ann WHERE len(actors) >= 2 UNION SELECT item_id FROM flags)
                 SEMI JOIN (SELECT id AS item_id FROM items WHERE split = 'pool') USING (item_id)),
        q AS (SELECT item_id, arg_max(probs, batch_id) AS probs, bool_or(audit) AS audit FROM queue
              SEMI JOIN cand USING (item_id) GROUP BY item_id)
        SELECT c.item_id, coalesce(a.actors, []) AS actors, coalesce(a.labels, []) AS labels,
               coalesce(f.n_flags, 0) AS n_flags, f.notes AS flag_notes, q.probs, coalesce(q.audit, false) AS audit,
               j.event_id IS NOT NULL AND j.event_id > coalesce(a.last_event, 0) AS adjudicated
        FROM cand c LEFT JOIN ann a USING (item_id) LEFT JOIN flags f USING (item_id)
        LEFT JOIN q USING (item_id) LEFT JOIN adj j USING (item_id)
        ORDER BY c.item_id""")


def versions(store: Store, item_id: str) -> dict | None:
    """One item as a reviewer sees it: its text, every standing label, skip, flag and adjudication
    (who, what, reason, note, when, whether the suggestion was shown), and the model's view."""
    item = store.dicts("SELECT id, text, metadata, split FROM items WHERE id = ?", [item_id])
    if not item:
        return None
    events = store.dicts(
        """
        SELECT event_id, actor, kind, via, array_to_string(labels, '|') AS labels, error_category, note, ts,
               suggestion, suggestion_hidden, model_version, audit, strategy
        FROM effective_events WHERE item_id = ? AND kind IN ('label', 'skip', 'flag', 'adjudicate')
          AND coalesce(via, '') <> 'import'
        ORDER BY event_id""",
        [item_id],
    )
    q = store.rows("SELECT probs, model_version FROM queue WHERE item_id = ? ORDER BY batch_id DESC LIMIT 1", [item_id])
    for e in events:
        e["ts"] = e["ts"].isoformat() if e["ts"] is not None else None
    return {
        "item_id": item_id,
        "text": item[0]["text"],
        "split": item[0]["split"],
        "metadata": json.loads(item[0]["metadata"]) if item[0]["metadata"] else {},
        "events": events,
        "model_probs": json.loads(q[0][0]) if q and q[0][0] else None,
        "model_version": q[0][1] if q else None,
    }


def latest_adjudication(store: Store, actor: str) -> dict | None:
    """``actor``'s latest adjudication still standing (what a reviewer's undo takes back)."""
    rows = store.dicts(
        """SELECT event_id, item_id FROM effective_events WHERE actor = ? AND kind = 'adjudicate'
                          ORDER BY event_id DESC LIMIT 1""",
        [actor],
    )
    return rows[0] if rows else None


def latest_send_back(store: Store, actor: str) -> dict | None:
    """``actor``'s latest send-back still standing: its item and its undo events (one per label it took
    back, written together, so their ids are consecutive), with the events they took back."""
    rows = store.dicts(
        """SELECT u.event_id, u.item_id, u.note, u.target_event, t.actor AS who, t.kind, t.labels
           FROM live_undos l JOIN event_log u ON u.event_id = l.event_id JOIN events t ON t.event_id = u.target_event
           WHERE u.actor = ? AND u.note LIKE 'sent back: %' ORDER BY u.event_id DESC""",
        [actor],
    )
    if not rows:
        return None
    group = [rows[0]]
    for r in rows[1:]:
        last = group[-1]
        if r["item_id"] != last["item_id"] or r["note"] != last["note"] or r["event_id"] != last["event_id"] - 1:
            break
        group.append(r)
    return {"item_id": group[0]["item_id"], "last_event": group[0]["event_id"], "undos": group}


def gold_items(store: Store) -> list[dict]:
    """Every gold item with its text and metadata (served, blind, among the annotators' items)."""
    return store.dicts("SELECT id AS item_id, text, metadata FROM items WHERE split = 'gold' ORDER BY ord")


def gold_done(store: Store) -> list[tuple]:
    """(actor, item_id) of every standing label on a gold item."""
    return store.rows("""SELECT a.actor, a.item_id FROM annotations a JOIN items i ON i.id = a.item_id
                         WHERE i.split = 'gold' AND coalesce(a.via, '') <> 'import'""")


def gold_answers(store: Store, tier_key: str) -> list[tuple]:
    """(actor, given labels, reference labels, tier) of every standing label on a gold item."""
    return store.rows(
        """
        SELECT a.actor, array_to_string(a.labels, '|'), array_to_string(i.gold_label, '|'),
               json_extract_string(i.metadata, '$.' || ?)
        FROM annotations a JOIN items i ON i.id = a.item_id
        WHERE i.split = 'gold' AND coalesce(a.via, '') <> 'import' AND i.gold_label IS NOT NULL""",
        [tier_key],
    )


def standing_labels(store: Store, item_id: str) -> list[tuple]:
    """(event_id, actor, kind) of every annotator's label, skip or flag on the item still standing."""
    return store.rows(
        """SELECT event_id, actor, kind FROM effective_events
                         WHERE item_id = ? AND kind IN ('label', 'skip', 'flag') AND coalesce(via, '') <> 'import'
                         ORDER BY event_id""",
        [item_id],
    )


def sent_back(store: Store) -> dict[str, str]:
    """{item_id: reason} of items a reviewer sent back that nobody has decided since."""
    return dict(
        store.rows("""
        SELECT u.item_id, substr(arg_max(u.note, u.event_id), 12) FROM event_log u
        ANTI JOIN decided_items d ON d.item_id = u.item_id
        WHERE u.kind = 'undo' AND u.note LIKE 'sent back: %'
        GROUP BY u.item_id""")
    )
