"""What the metrics pane and ``labelloop status`` show: learning curves, calibration,
per-class recall, label distribution, throughput, agreement on overlap items, and the
engine's warnings."""

from __future__ import annotations

import json

import numpy as np

from labelloop.core.engine.model import evaluate, fit_model
from labelloop.core.loop.al_round import features_for, pool_state, use_latest_features
from labelloop.core.loop.batch import STOP_KAPPA, STOP_ROUNDS, TrainReport, warnings_for
from labelloop.core.store import reports
from labelloop.core.store.project import Project
from labelloop.core.store.reports import arm_counts  # noqa: F401  (re-exported: the metrics pane shows it too)


def metrics_snapshot(project: Project) -> dict:
    """Cheap: read what the store already holds (no training).

    Long because it assembles the pane's read model field by field from one read of the store.
    """
    r = reports.metrics_rows(project.store)
    models = r["models"]
    curve = []
    latest = None
    for m in models:
        mm = json.loads(m["metrics"]) if m["metrics"] else {}
        if mm.get("n_test"):
            curve.append(
                {
                    "version": m["version"],
                    "n_train": m["n_train"],
                    "accuracy": mm["accuracy"],
                    "macro_f1": mm["macro_f1"],
                    "ece": mm["ece"],
                }
            )
        latest = {"version": m["version"], **mm}
    distribution, throughput, corrections = r["distribution"], r["throughput"], r["corrections"]
    arms = arm_counts(project)
    batch = r["batch"]
    signals = json.loads(batch[0]["signals"]) if batch and batch[0]["signals"] else {}
    counts = {c: 0 for c in project.config.labels}
    for k, v in distribution.items():
        for c in k.split("|"):
            if c in counts:
                counts[c] += v
    from labelloop.core.engine.coldstart import seed_adequacy

    adequacy = seed_adequacy(counts, project.config.labels, project.config.min_labels_per_class)
    report = TrainReport(
        latest["version"] if latest else None,
        batch[0]["batch_id"] if batch else None,
        0,
        batch[0]["strategy"] if batch else "",
        sum(counts.values()),
        metrics=latest or {},
        adequacy=adequacy,
        signals=signals,
    )
    # Anchoring: how often the human label equals the model's top label, with and without seeing it.
    anchoring: dict[str, dict] = {}
    for hidden, label, probs in r["anchoring"]:
        p = json.loads(probs)
        a = anchoring.setdefault("hidden" if hidden else "shown", {"n": 0, "agree": 0})
        a["n"] += 1
        a["agree"] += label == max(p, key=p.get)
    for a in anchoring.values():
        a["agree_with_model"] = a.pop("agree") / a["n"]
    from labelloop.core.measure.signs import summary_line

    measured = reports.measurements(project.store)
    compact = [
        {
            k: m.get(k)
            for k in (
                "version",
                "n_labels",
                "n_al",
                "n_audit",
                "n_cold",
                "accuracy",
                "macro_f1",
                "ece",
                "ece_uncalibrated",
                "warnings",
            )
        }
        for m in measured
    ]
    last_arms = measured[-1].get("arms") if measured else None
    return {
        "measurements": compact,
        "arms_latest": last_arms,
        "summary": summary_line(measured[-1] if measured else None),
        "curve": curve,
        "latest": latest,
        "distribution": distribution,
        "throughput": throughput,
        "corrections": corrections,
        "arms": arms,
        "signals": signals,
        "warnings": warnings_for(report),
        "anchoring": anchoring,
        "stop_rule": f"kappa >= {STOP_KAPPA} on the stop set for {STOP_ROUNDS} rounds",
    }


def arm_comparison(project: Project, checkpoints: int = 5, seed: int = 0) -> dict:
    """Learning curves on the test split from the labels of each arm: AL-selected vs random audit.

    Trains a few small models (one per checkpoint and arm), so run it off the UI thread."""
    if project.config.multi_label:
        return {"al": [], "random": [], "note": "not computed for multi-label projects"}
    feats = features_for(project)
    choice = use_latest_features(project, feats)
    state = pool_state(project, feats)
    if len(state.test_rows) == 0:
        return {"al": [], "random": [], "note": "no test split"}
    rows = reports.arm_label_rows(project.store)
    arms = {
        "al": [(o, lab) for o, lab, audit, strat in rows if not audit and strat and not strat.startswith("cold start")],
        "random": [(o, lab) for o, lab, audit, _s in rows if audit],
    }
    X_test = feats.X[state.test_rows]
    out = {}
    for arm, items in arms.items():
        points = []
        if items:
            ords = np.array([o for o, _ in items])
            labels = [lab for _, lab in items]
            for n in sorted({int(x) for x in np.linspace(min(10, len(items)), len(items), checkpoints)}):
                y = labels[:n]
                if len(set(y)) < 2:
                    continue
                m = fit_model(
                    feats.X[feats.rows_for_ords(ords[:n])],
                    y,
                    project.config.labels,
                    calibration="none",
                    seed=seed,
                    C=float((choice or {}).get("C", 100.0)),
                )
                ev = evaluate(m, X_test, state.y_test, project.config.labels)
                points.append({"n": n, "accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"]})
        out[arm] = points
    return out
