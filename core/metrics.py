"""What the metrics pane and ``labelloop status`` show: learning curves, calibration,
per-class recall, label distribution, throughput, agreement on overlap items, and the
engine's warnings."""

from __future__ import annotations

import json

import numpy as np

from labelloop.core.loop import STOP_KAPPA, STOP_ROUNDS, features_for, pool_state, warnings_for, TrainReport
from labelloop.core.model import evaluate, fit_model
from labelloop.core.project import Project
from labelloop.core.status import arm_counts  # noqa: F401  (re-exported: the metrics pane shows it too)


def metrics_snapshot(project: Project) -> dict:
    """Cheap: read what the store already holds (no training)."""
    s = project.store
    models = s.dicts("""SELECT version, n_train, metrics, created_at FROM models
                        WHERE origin = 'trained' ORDER BY version""")
    curve = []
    latest = None
    for m in models:
        mm = json.loads(m["metrics"]) if m["metrics"] else {}
        if mm.get("n_test"):
            curve.append({"version": m["version"], "n_train": m["n_train"], "accuracy": mm["accuracy"],
                          "macro_f1": mm["macro_f1"], "ece": mm["ece"]})
        latest = {"version": m["version"], **mm}
    distribution = dict(s.rows("""SELECT coalesce(array_to_string(labels, '|'), '(unresolved)'), count(*)
                                  FROM final_labels GROUP BY 1 ORDER BY 1"""))
    throughput = s.dicts("""
        SELECT actor, count(*) AS decisions,
               count(*) FILTER (WHERE ts > now() - INTERVAL 1 HOUR) AS last_hour,
               median(duration_ms) AS median_ms
        FROM effective_events WHERE kind IN ('label', 'skip', 'flag') AND coalesce(via, '') <> 'import'
        GROUP BY actor ORDER BY decisions DESC""")
    corrections = dict(s.rows("""SELECT error_category, count(*) FROM effective_events
                                 WHERE error_category IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"""))
    arms = arm_counts(project)
    batch = s.dicts("SELECT batch_id, strategy, size, n_audit, signals FROM batches ORDER BY batch_id DESC LIMIT 1")
    signals = json.loads(batch[0]["signals"]) if batch and batch[0]["signals"] else {}
    counts = {c: 0 for c in project.config.labels}
    for k, v in distribution.items():
        for c in k.split("|"):
            if c in counts:
                counts[c] += v
    from labelloop.core.coldstart import seed_adequacy
    adequacy = seed_adequacy(counts, project.config.labels, project.config.min_labels_per_class)
    report = TrainReport(latest["version"] if latest else None, batch[0]["batch_id"] if batch else None, 0,
                         batch[0]["strategy"] if batch else "", sum(counts.values()),
                         metrics=latest or {}, adequacy=adequacy, signals=signals)
    # Anchoring: how often the human label equals the model's top label, with and without seeing it.
    anchoring: dict[str, dict] = {}
    for hidden, label, probs in s.rows("""
            SELECT e.suggestion_hidden, e.labels[1], q.probs FROM effective_events e
            JOIN queue q ON q.batch_id = e.batch_id AND q.item_id = e.item_id
            WHERE e.kind = 'label' AND e.suggestion_hidden IS NOT NULL AND q.probs IS NOT NULL"""):
        p = json.loads(probs)
        a = anchoring.setdefault("hidden" if hidden else "shown", {"n": 0, "agree": 0})
        a["n"] += 1
        a["agree"] += label == max(p, key=p.get)
    for a in anchoring.values():
        a["agree_with_model"] = a.pop("agree") / a["n"]
    return {"curve": curve, "latest": latest, "distribution": distribution, "throughput": throughput,
            "corrections": corrections, "arms": arms, "signals": signals, "warnings": warnings_for(report),
            "anchoring": anchoring,
            "stop_rule": f"kappa >= {STOP_KAPPA} on the stop set for {STOP_ROUNDS} rounds"}


def arm_comparison(project: Project, checkpoints: int = 5, seed: int = 0) -> dict:
    """Learning curves on the test split from the labels of each arm: AL-selected vs random audit.

    Trains a few small models (one per checkpoint and arm), so run it off the UI thread."""
    if project.config.multi_label:
        return {"al": [], "random": [], "note": "not computed for multi-label projects"}
    feats = features_for(project)
    state = pool_state(project, feats)
    if len(state.test_rows) == 0:
        return {"al": [], "random": [], "note": "no test split"}
    rows = project.store.rows("""
        SELECT i.ord, f.labels[1], coalesce(e.audit, false), e.strategy
        FROM final_labels f JOIN items i ON i.id = f.item_id JOIN events e ON e.event_id = f.deciding_event
        WHERE i.split = 'pool' AND f.labels IS NOT NULL ORDER BY f.deciding_event""")
    arms = {"al": [(o, l) for o, l, audit, strat in rows if not audit and strat and not strat.startswith("cold start")],
            "random": [(o, l) for o, l, audit, _s in rows if audit]}
    X_test = feats.X[state.test_rows]
    out = {}
    for arm, items in arms.items():
        points = []
        if items:
            ords = np.array([o for o, _ in items])
            labels = [l for _, l in items]
            for n in sorted({int(x) for x in np.linspace(min(10, len(items)), len(items), checkpoints)}):
                y = labels[:n]
                if len(set(y)) < 2:
                    continue
                m = fit_model(feats.X[feats.rows_for_ords(ords[:n])], y, project.config.labels,
                              calibration="none", seed=seed)
                ev = evaluate(m, X_test, state.y_test, project.config.labels)
                points.append({"n": n, "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"]})
        out[arm] = points
    return out
