"""Is active learning working here? Live measurement after each retrain, and the warning signs.

Numbers only (arrays in, dicts out; no store). ``arm_curves`` runs inside a retrain (it has the
features); the rest works on the stored measurements of every model version
(``core/store/reports.measurements``).

The AL arm against the random-audit arm at equal budget: for budgets b up to the smaller arm's
label count, a model is trained on the cold-start labels plus the first b labels of each arm and
evaluated on the held-out test split; the accuracy difference carries a percentile bootstrap band
over test items (the models fixed: the band is the test split's sampling noise, the part a
project can measure live; the simulator's repeats add the selection's own variance).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

ECE_LIMIT = 0.10
RECALL_DIVERGENCE = 0.15  # the spread (max - min per-class recall) grew by this much over the last versions
RECALL_WINDOW = 3  # model versions the divergence is measured over
AGREEMENT_GAP = 0.10  # AL-selected items' percent agreement below random items' by this much
AGREEMENT_MIN_ITEMS = 10  # overlap items needed in each arm before agreement is compared
CONVERGENCE_RATIO = 1.5  # a batch this much more self-similar than a random sample (core/loop/al_round.py)
ARM_POINTS = 4
ARM_MIN = 5  # labels in the smaller arm before the arms are compared
BOOT = 400
N_SIGNS = 6  # warning_signs' count (tests/test_measure.py checks they agree)
WINDOW_DAYS = 30
STALL_WINDOW_LABELS = 100  # labels per window of the stall sign (fast projects: windows of labels, not days)
STALL_WINDOWS = 3  # windows over which labels per accuracy point must stay flat or rise
STALL_FLAT = 0.9  # "flat": a window costs at least this share of the one before it


def _fit_predict(X_train, y_train, X_test, classes, C: float, seed: int):
    from labelloop.core.engine.model import fit_model

    m = fit_model(X_train, list(y_train), classes, calibration="none", C=C, seed=seed)
    probs = m.predict_proba(X_test)
    return np.array([m.classes_[i] for i in probs.argmax(axis=1)], dtype=object)


def arm_curves(
    X,
    labelled_rows: np.ndarray,
    y: list,
    arms: list[str],
    test_rows: np.ndarray,
    y_test: list,
    classes: list[str],
    *,
    C: float = 10.0,
    seed: int = 0,
    points: int = ARM_POINTS,
    n_boot: int = BOOT,
    reference: float | None = None,
    targets=(0.90, 0.95, 0.98),
) -> dict:
    """Accuracy of models trained on each arm's labels (plus the cold-start labels) at equal budgets,
    with bootstrap bands over test items for each arm and for their difference (AL - random); with
    ``reference`` (the newest model's accuracy), labels to each of ``targets`` of it (``live_targets``)."""
    arms = list(arms)
    y = np.asarray(y, dtype=object)
    y_test = np.asarray(y_test, dtype=object)
    cold = [i for i, a in enumerate(arms) if a == "cold"]
    al = [i for i, a in enumerate(arms) if a == "al"]
    rnd = [i for i, a in enumerate(arms) if a == "audit"]
    budget = min(len(al), len(rnd))
    out = {"al_labels": len(al), "random_labels": len(rnd), "cold_labels": len(cold), "budget": budget, "points": []}
    if len(test_rows) == 0:
        out["note"] = "no test split"
        return out
    if budget < ARM_MIN:
        out["note"] = (
            f"the random-audit arm has {len(rnd)} labels and the AL arm {len(al)}; "
            f"the arms are compared from {ARM_MIN} labels each"
        )
        return out
    X_test = X[test_rows]
    rng = np.random.default_rng(seed)
    boot_idx = rng.integers(0, len(y_test), size=(n_boot, len(y_test)))
    grid = sorted({int(round(v)) for v in np.linspace(max(ARM_MIN, budget / points), budget, points)})
    boots: list[tuple[int, np.ndarray, np.ndarray, float, float]] = []
    for b in grid:
        correct = {}
        for name, idx in (("al", al), ("random", rnd)):
            rows = np.array(cold + idx[:b], dtype=np.int64)
            if len(set(y[rows])) < 2:
                correct = {}
                break
            pred = _fit_predict(X[labelled_rows[rows]], y[rows], X_test, classes, C, seed)
            correct[name] = (pred == y_test).astype(np.float64)
        if not correct:
            continue
        a, r = correct["al"], correct["random"]
        ba, br = a[boot_idx].mean(axis=1), r[boot_idx].mean(axis=1)
        boots.append((int(b), ba, br, float(a.mean()), float(r.mean())))
        d = ba - br
        out["points"].append(
            {
                "n": int(b),
                "labels_each": int(len(cold) + b),
                "al": float(a.mean()),
                "al_low": float(np.quantile(ba, 0.025)),
                "al_high": float(np.quantile(ba, 0.975)),
                "random": float(r.mean()),
                "random_low": float(np.quantile(br, 0.025)),
                "random_high": float(np.quantile(br, 0.975)),
                "diff": float(a.mean() - r.mean()),
                "diff_low": float(np.quantile(d, 0.025)),
                "diff_high": float(np.quantile(d, 0.975)),
            }
        )
    if reference is not None and boots:
        out["targets"] = live_targets(boots, reference, len(cold), targets)
    return out


def live_targets(boots: list, reference: float, n_cold: int, fracs) -> list[dict]:
    """Labels to each target (a share of ``reference``, the newest model's test accuracy on all labels)
    for the AL arm and the random-audit arm at equal budgets, as far as the audit arm reaches: per
    target the first budget each arm's curve reaches it (None: not within the audit arm's labels), and
    the paired difference random - AL with a 95% interval over the same bootstrap resamples of the test
    items (a resample where an arm does not reach it counts one grid step past the audit arm's size)."""
    grid = np.array([b for b, *_ in boots])
    past = int(grid[-1] + (grid[-1] - grid[-2] if len(grid) > 1 else grid[-1]))
    BA = np.stack([ba for _b, ba, _br, _a, _r in boots])  # (points, n_boot)
    BR = np.stack([br for _b, _ba, br, _a, _r in boots])
    A = np.array([a for *_x, a, _r in boots])
    R = np.array([r for *_x, r in boots])

    def first(reached: np.ndarray) -> np.ndarray:  # (points, ...) -> the first budget reached, else past
        idx = np.argmax(reached, axis=0)
        return np.where(reached.any(axis=0), grid[idx], past)

    out = []
    for frac in fracs:
        t = frac * reference
        al, rnd = first(A >= t), first(R >= t)
        d = first(BR >= t) - first(BA >= t)
        out.append(
            {
                "target": float(frac),
                "accuracy": float(t),
                "al": int(al) + n_cold if al != past else None,
                "random": int(rnd) + n_cold if rnd != past else None,
                "saved": float(rnd - al) if al != past or rnd != past else None,
                "saved_low": float(np.quantile(d, 0.025)),
                "saved_high": float(np.quantile(d, 0.975)),
                "limit": int(grid[-1]) + n_cold,
            }
        )
    return out


def target_lines(arms: dict | None) -> list[str]:
    """The live verdict per target (``arm_curves``' "targets"), with the audit arm's limit stated."""
    ts = (arms or {}).get("targets") or []
    out = []
    for t in ts:
        head = f"{t['target'] * 100:g}% of the current accuracy ({t['accuracy']:.3f}):"
        if t["al"] is None and t["random"] is None:
            out.append(f"{head} neither arm reaches it within the {t['limit']} labels each that the audit arm allows")
            continue
        al = f"AL at {t['al']} labels" if t["al"] is not None else f"AL not within {t['limit']}"
        rnd = f"random at {t['random']}" if t["random"] is not None else f"random not within {t['limit']}"
        iv = f"[{t['saved_low']:+.0f}, {t['saved_high']:+.0f}]"
        if t["saved_low"] > 0:
            say = f"AL saves {t['saved']:+.0f} labels {iv}"
        elif t["saved_high"] < 0:
            say = f"random needs {-t['saved']:.0f} fewer labels {iv}"
        else:
            say = f"no measurable difference {iv}"
        out.append(f"{head} {al}, {rnd}: {say}")
    if ts:
        out.append(
            f"  (measured up to {ts[0]['limit']} labels per arm: the random-audit arm's size; beyond it the "
            "live arms cannot say)"
        )
    return out


def _recall_spread(per_class: dict) -> float | None:
    rec = [v.get("recall") for v in (per_class or {}).values() if isinstance(v, dict) and v.get("support")]
    rec = [r for r in rec if isinstance(r, (int, float))]
    return (max(rec) - min(rec)) if len(rec) >= 2 else None


def cost_per_point(
    rows: list[dict], cost_per_label: float, compute_price_per_hour: float, window_days: int = WINDOW_DAYS
) -> list[dict]:
    """For each model version: the money spent in the trailing window (labels x cost per label +
    compute) divided by the accuracy gained in it, in percentage points. ``rows``: measurements in
    version order with created_at (datetime), n_labels, compute_seconds (cumulative), accuracy."""
    out = []
    for i, r in enumerate(rows):
        if r.get("accuracy") is None or r.get("created_at") is None:
            continue
        start = r["created_at"] - timedelta(days=window_days)
        first = next((q for q in rows[: i + 1] if q.get("accuracy") is not None and q["created_at"] >= start), None)
        if first is None or first is r:
            out.append({"version": r["version"], "cost_per_point": None, "gain_points": 0.0, "spent": 0.0})
            continue
        spent = (r["n_labels"] - first["n_labels"]) * cost_per_label + (
            r.get("compute_seconds", 0.0) - first.get("compute_seconds", 0.0)
        ) * compute_price_per_hour / 3600
        gain = 100.0 * (r["accuracy"] - first["accuracy"])
        out.append(
            {
                "version": r["version"],
                "spent": spent,
                "gain_points": gain,
                "cost_per_point": spent / gain if gain > 0.05 else None,
            }
        )
    return out


def label_windows(rows: list[dict], width: int = STALL_WINDOW_LABELS) -> list[dict]:
    """Labels per accuracy point in consecutive windows of ``width`` labels: for each window, the
    measurement at its end against the one at its start (the first version at or past each multiple
    of ``width``). A window that gained nothing costs infinitely many labels per point."""
    points = [r for r in rows if r.get("accuracy") is not None and r.get("n_labels") is not None]
    marks, next_at = [], None
    for r in points:
        if next_at is None or r["n_labels"] >= next_at:
            marks.append(r)
            next_at = r["n_labels"] + width
    out = []
    for a, b in zip(marks, marks[1:]):
        gain = 100.0 * (b["accuracy"] - a["accuracy"])
        spent = b["n_labels"] - a["n_labels"]
        out.append(
            {
                "from_labels": a["n_labels"],
                "to_labels": b["n_labels"],
                "gain_points": gain,
                "labels_per_point": spent / gain if gain > 0 else float("inf"),
                "n_test": b.get("n_test") or 0,
                "accuracy": b["accuracy"],
                "accuracy_before": a["accuracy"],
            }
        )
    return out


def stalled(rows: list[dict], width: int = STALL_WINDOW_LABELS, k: int = STALL_WINDOWS) -> tuple[bool, float | None]:
    """(fires, the latest window's labels per point): over the last ``k`` windows the labels per
    accuracy point stayed flat or rose, and the accuracy moved less than its own 95% interval (the
    test split's sampling noise, Wilson half-width at the latest accuracy)."""
    w = label_windows(rows, width)[-k:]
    if len(w) < k or not w[-1]["n_test"]:
        return False, None
    p = w[-1]["accuracy"]
    half = 1.96 * np.sqrt(max(p * (1 - p), 1e-9) / w[-1]["n_test"])
    # a window whose gain is below the test split's noise (half the interval) bought no point at all
    cost = [x["labels_per_point"] if x["gain_points"] >= 50.0 * half else float("inf") for x in w]
    flat_or_rising = all(b >= STALL_FLAT * a for a, b in zip(cost, cost[1:]))
    moved = abs(w[-1]["accuracy"] - w[0]["accuracy_before"])
    return bool(flat_or_rising and moved <= half), cost[-1]


def warning_signs(
    rows: list[dict], *, agreement: dict | None = None, signals: dict | None = None, batch_strategy: str | None = None
) -> list[dict]:
    """The six warning signs, each with its rule, whether it fires, the measured value and what to do.

    ``rows``: measurements of every model version, oldest first (each with per_class, ece, arms);
    ``agreement``: ``agreement_report`` output (its by_arm part); ``signals``: the latest batch's.

    Long because the six signs stand side by side, each its rule, value and advice, in the
    order every screen lists them.
    """
    latest = rows[-1] if rows else {}
    signs = []

    # 1. per-class recall diverging
    window = [r for r in rows if _recall_spread(r.get("per_class")) is not None][-RECALL_WINDOW:]
    fire, value = False, None
    if len(window) >= 2:
        s0, s1 = _recall_spread(window[0]["per_class"]), _recall_spread(window[-1]["per_class"])
        value = s1 - s0
        fire = bool(s1 - s0 >= RECALL_DIVERGENCE)
    signs.append(
        {
            "key": "recall_diverging",
            "fires": fire,
            "value": value,
            "rule": f"the spread between the best and worst per-class recall grew by {RECALL_DIVERGENCE} or "
            f"more over the last {RECALL_WINDOW} model versions",
            "todo": "label the lagging classes (a keyword or stratified batch), or raise the audit share; "
            "check the guidelines for those classes",
        }
    )

    # 2. agreement on AL-selected items below agreement on random items
    fire, value = False, None
    by_arm = (agreement or {}).get("by_arm") or {}
    a, r = (by_arm.get("al") or {}).get("percent") or {}, (by_arm.get("audit") or {}).get("percent") or {}
    pa, pr = a.get("value"), r.get("value")
    if (
        pa is not None
        and pr is not None
        and (a.get("n_items") or 0) >= AGREEMENT_MIN_ITEMS
        and (r.get("n_items") or 0) >= AGREEMENT_MIN_ITEMS
    ):
        value = pa - pr
        fire = bool(pr - pa >= AGREEMENT_GAP)
    signs.append(
        {
            "key": "agreement_lower_on_al",
            "fires": fire,
            "value": value,
            "rule": f"percent agreement on AL-selected items is {AGREEMENT_GAP} or more below agreement on "
            f"random-audit items ({AGREEMENT_MIN_ITEMS}+ overlap items in each)",
            "todo": "the model is picking ambiguous items: clarify the guidelines with examples from them, "
            "or send them to review",
        }
    )

    # 3. ECE above 0.10
    ece = latest.get("ece")
    signs.append(
        {
            "key": "ece_high",
            "fires": bool(isinstance(ece, (int, float)) and ece > ECE_LIMIT),
            "value": ece,
            "rule": f"expected calibration error of the latest model on the test split above {ECE_LIMIT}",
            "todo": "uncertainty is not trustworthy: try another calibration ([strategy] calibration), more "
            "labels, or random sampling until it is below the limit",
        }
    )

    # 4. the random arm outperforming AL at equal budget
    pts = ((latest.get("arms") or {}).get("points")) or []
    last = pts[-1] if pts else None
    signs.append(
        {
            "key": "random_beats_al",
            "fires": bool(last and last["diff_high"] < 0),
            "value": last["diff"] if last else None,
            "rule": "at the largest equal budget, the model trained on random-audit labels is more accurate "
            "than the one trained on AL labels, the 95% bootstrap interval of the difference below zero",
            "todo": "AL is not paying off here: switch to random sampling (or diversity), or check calibration "
            "and the features",
        }
    )

    # 5. query batches converging on one cluster
    # a cold-start batch (keyword, typicality) is not a query batch: its similarity is by design
    ratio = None if (batch_strategy or "").startswith("cold start") else (signals or {}).get("convergence_ratio")
    signs.append(
        {
            "key": "batches_converging",
            "fires": bool(isinstance(ratio, (int, float)) and ratio >= CONVERGENCE_RATIO),
            "value": ratio,
            "rule": f"the latest batch is {CONVERGENCE_RATIO}x or more as self-similar as a random sample of "
            "the pool (mean pairwise cosine similarity)",
            "todo": "use the diversity strategy or a larger audit share; look at the batch for one topic",
        }
    )

    # 6. the loop has stalled
    fire, value = stalled(rows)
    signs.append(
        {
            "key": "loop_stalled",
            "fires": fire,
            "value": None if value is None or value == float("inf") else value,
            "rule": f"labels per accuracy point flat or rising over the last {STALL_WINDOWS} windows of "
            f"{STALL_WINDOW_LABELS} labels while the accuracy stayed inside its 95% interval",
            "todo": "the model has stopped learning from these labels: add more diverse data (a new source, "
            "a larger audit share), revise the guidelines if agreement is low, or stop labelling",
        }
    )
    return signs


def to_datetime(v) -> datetime | None:
    if isinstance(v, datetime):
        return v
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            return None
    return None


def summary_line(m: dict | None) -> str:
    """One line for the labelling screen: AL against random at the largest equal budget, ECE, the
    warning signs that fire (from a stored measurement)."""
    if not m:
        return "no model measured yet"
    parts = [f"v{m['version']}"]
    fired = m.get("warnings") or []
    parts.append(f"{len(fired)} of {N_SIGNS} warnings" + (f" ({', '.join(fired)})" if fired else ""))
    if m.get("ece") is not None:
        parts.append(f"ECE {m['ece']:.3f}")
    pts = (m.get("arms") or {}).get("points") or []
    if pts:
        p = pts[-1]
        verdict = (
            "AL ahead" if p["diff_low"] > 0 else "random ahead" if p["diff_high"] < 0 else "no measurable difference"
        )
        parts.append(
            f"AL-random {p['diff']:+.3f} [{p['diff_low']:+.3f}, {p['diff_high']:+.3f}] at {p['n']} labels each"
            f" ({verdict})"
        )
    else:
        parts.append(f"AL vs random: {m.get('n_audit', 0)} audit labels, too few to compare")
    return " · ".join(parts)
