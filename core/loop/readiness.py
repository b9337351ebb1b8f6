"""``labelloop check``: is this project ready for active learning, and is AL working here?

Each check gives a measured value, its threshold, pass / warn / fail (or n/a with the reason) and
what to do. The six warning signs (core/measure/signs.py) follow. Thresholds are module constants,
named in every line, so a reader can argue with them.
"""

from __future__ import annotations

import math

import numpy as np

from labelloop.core.measure.signs import ECE_LIMIT, to_datetime, warning_signs
from labelloop.core.pool.partitions import manifest_path
from labelloop.core.util.errors import LabelloopError

POOL_RATIO = 10.0
COST_PASS, COST_WARN = 0.10, 0.30  # pipeline overhead per label as a share of the annotation cost
AUC_PASS, AUC_WARN = 0.60, 0.70  # pool-vs-test classifier AUC
GUIDELINE_PASS, GUIDELINE_WARN = 0.10, 0.25  # share of corrections saying "ambiguous" or "guideline gap"
GUIDELINE_MIN = 10  # corrections needed before the share is judged
GUIDELINE_REASONS = ("ambiguous", "guideline gap")
DUPLICATE_WARN = 0.01
TARGET_SHARE = 0.95  # labels needed: to reach 95% of the learning curve's plateau
DIST_SAMPLE = 2000


def _check(key, name, status, value, threshold, detail, todo="") -> dict:
    return {
        "key": key,
        "name": name,
        "status": status,
        "value": value,
        "threshold": threshold,
        "detail": detail,
        "todo": todo,
    }


def check_calibration(latest: dict | None) -> dict:
    name = "calibration"
    if not latest or latest.get("ece") is None:
        return _check(
            "calibration",
            name,
            "n/a",
            None,
            f"ECE <= {ECE_LIMIT}",
            "no trained model measured on a test split yet",
            "label the seed set and retrain",
        )
    ece, raw = latest["ece"], latest.get("ece_uncalibrated")
    helped = raw is None or ece <= raw
    detail = f"ECE {ece:.3f} calibrated" + (f", {raw:.3f} raw" if raw is not None else "") + " on the test split"
    if ece <= ECE_LIMIT and helped:
        return _check("calibration", name, "pass", ece, f"<= {ECE_LIMIT}", detail)
    if not helped and raw <= ECE_LIMIT:
        return _check(
            "calibration",
            name,
            "warn" if ece <= ECE_LIMIT else "fail",
            ece,
            f"<= {ECE_LIMIT}",
            detail + ": calibration made it worse",
            'use the raw model\'s probabilities: [strategy] calibration = "none"',
        )
    return _check(
        "calibration",
        name,
        "fail",
        ece,
        f"<= {ECE_LIMIT}",
        detail,
        "uncertainty is not trustworthy: more labels, another calibration (platt), or random sampling",
    )


def check_cost(n_labels: int, compute_seconds: float, retrain_seconds: float, cfg) -> dict:
    name = "cost dominance"
    if n_labels == 0:
        return _check("cost", name, "n/a", None, f"overhead <= {COST_PASS:.0%} of the label cost", "no labels yet")
    hourly = cfg.cost_per_label / max(cfg.seconds_per_label, 1e-9) * 3600
    compute_money = compute_seconds * cfg.compute_price_per_hour / 3600
    waiting_money = retrain_seconds * hourly / 3600
    per_label = (compute_money + waiting_money) / n_labels
    share = per_label / cfg.cost_per_label if cfg.cost_per_label > 0 else math.inf
    detail = (
        f"pipeline overhead {per_label:.4f} per label (compute {compute_money:.2f}, annotators waiting for "
        f"retrains at most {waiting_money:.2f}, over {n_labels:,} labels) against {cfg.cost_per_label:.2f} per "
        f"label of annotation: {share:.1%}"
    )
    status = "pass" if share <= COST_PASS else ("warn" if share <= COST_WARN else "fail")
    return _check(
        "cost",
        name,
        status,
        share,
        f"<= {COST_PASS:.0%} (warn up to {COST_WARN:.0%})",
        detail,
        ""
        if status == "pass"
        else "retrain less often (retrain_every), batch more, or label at random: the overhead eats what AL saves",
    )


def fit_curve(ns: np.ndarray, acc: np.ndarray) -> tuple[float, float, float] | None:
    """Inverse power law acc(n) = a - b n^-c fitted to the learning curve (a <= 1): None with fewer
    than three points or when the fit fails."""
    if len(ns) < 3 or len(set(ns.tolist())) < 3:
        return None
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    try:
        with warnings.catch_warnings():  # three points fit exactly: no covariance, and nothing to say
            warnings.simplefilter("ignore", OptimizeWarning)
            (a, b, c), _ = curve_fit(
                lambda n, a, b, c: a - b * np.power(n, -c),
                ns.astype(float),
                acc.astype(float),
                p0=[min(1.0, acc.max() + 0.05), 1.0, 0.5],
                bounds=([0.0, 0.0, 0.01], [1.0, 100.0, 3.0]),
                maxfev=5000,
            )
    except (RuntimeError, ValueError):
        return None
    return float(a), float(b), float(c)


def check_pool(rows: list[dict], pool_size: int) -> dict:
    name = "pool size"
    pts = [(r["n_labels"], r["accuracy"]) for r in rows if r.get("accuracy") is not None]
    fit = fit_curve(np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) if pts else None
    if fit is None:
        return _check(
            "pool",
            name,
            "n/a",
            None,
            f"pool >= {POOL_RATIO:.0f}x the labels needed",
            f"{len(pts)} model versions measured; the learning curve needs three to estimate the labels needed",
            "retrain a few more times",
        )
    a, b, c = fit
    target = TARGET_SHARE * a
    needed = (b / max(a - target, 1e-9)) ** (1 / c)
    if a >= 0.995 and needed > 20 * max(p[0] for p in pts):
        return _check(
            "pool",
            name,
            "warn",
            None,
            f">= {POOL_RATIO:.0f}x",
            f"the learning curve ({len(pts)} versions, up to {max(p[0] for p in pts):,} labels) has not "
            "started to flatten: its plateau, and so the labels needed, cannot be estimated yet",
            "label on; the estimate appears once the curve bends",
        )
    ratio = pool_size / needed if needed > 0 else math.inf
    detail = (
        f"learning curve plateau {a:.3f}; about {needed:,.0f} labels to reach {target:.3f} "
        f"({TARGET_SHARE:.0%} of it); pool {pool_size:,} = {ratio:.1f}x"
    )
    return _check(
        "pool",
        name,
        "pass" if ratio >= POOL_RATIO else "fail",
        ratio,
        f">= {POOL_RATIO:.0f}x",
        detail,
        ""
        if ratio >= POOL_RATIO
        else "with a pool this small AL has little to choose from: import more "
        "unlabelled items like the deployment data, or label at random",
    )


def check_distribution(feats, pool_rows: np.ndarray, test_rows: np.ndarray, seed: int = 0) -> dict:
    """A classifier that tries to tell pool items from test items: AUC near 0.5 means they match."""
    name = "distribution match"
    if len(test_rows) < 20 or len(pool_rows) < 20:
        return _check(
            "distribution",
            name,
            "n/a",
            None,
            f"AUC <= {AUC_PASS}",
            "fewer than 20 test (or pool) items",
            "import a test split that looks like deployment data",
        )
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    p = rng.choice(pool_rows, min(DIST_SAMPLE, len(pool_rows)), replace=False)
    t = rng.choice(test_rows, min(DIST_SAMPLE, len(test_rows)), replace=False)
    X = feats.neighbour_X[np.concatenate([p, t])]
    y = np.r_[np.zeros(len(p)), np.ones(len(t))]
    scores = np.zeros(len(y))
    for tr, te in StratifiedKFold(3, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        clf = LogisticRegression(C=1.0, max_iter=300, class_weight="balanced").fit(X[tr], y[tr])
        scores[te] = clf.decision_function(X[te])
    auc = float(roc_auc_score(y, scores))
    space = "sentence embeddings" if feats.E is not None else "TF-IDF"
    detail = f"a classifier ({space}) tells pool from test items with AUC {auc:.3f} (0.5: indistinguishable)"
    status = "pass" if auc <= AUC_PASS else ("warn" if auc <= AUC_WARN else "fail")
    return _check(
        "distribution",
        name,
        status,
        auc,
        f"<= {AUC_PASS} (warn up to {AUC_WARN})",
        detail,
        ""
        if status == "pass"
        else "the pool does not look like the test split: the test accuracy will "
        "not say how the model does on the pool; check both sources",
    )


def check_cold_start(counts: dict, labels: list[str], minimum: int) -> dict:
    name = "cold-start adequacy"
    short = {c: minimum - counts.get(c, 0) for c in labels if counts.get(c, 0) < minimum}
    missing = [c for c in labels if counts.get(c, 0) == 0]
    detail = "labels per class: " + ", ".join(f"{c} {counts.get(c, 0)}" for c in labels)
    if not short:
        return _check(
            "cold_start", name, "pass", min(counts.get(c, 0) for c in labels), f">= {minimum} per class", detail
        )
    rare = ", ".join(f"{c} ({counts.get(c, 0)})" for c in short)
    return _check(
        "cold_start",
        name,
        "fail" if missing else "warn",
        min(counts.get(c, 0) for c in labels),
        f">= {minimum} per class",
        detail + f"; below the minimum: {rare}",
        'seed the rare classes: cold_start = "keyword" with a seed_query for them, or label a stratified batch',
    )


def check_guidelines(reasons: list[tuple]) -> dict:
    name = "guideline coverage"
    n = len(reasons)
    if n < GUIDELINE_MIN:
        return _check(
            "guidelines",
            name,
            "n/a",
            None,
            f"<= {GUIDELINE_PASS:.0%}",
            f"{n} corrections so far; judged from {GUIDELINE_MIN}",
        )
    gap = [r for r in reasons if (r[0] or "") in GUIDELINE_REASONS]
    share = len(gap) / n
    al = [r for r in reasons if r[1]]
    al_share = (sum(1 for r in al if (r[0] or "") in GUIDELINE_REASONS) / len(al)) if al else None
    detail = f"{len(gap)} of {n} corrections ({share:.0%}) say ambiguous or guideline gap" + (
        f"; on AL-selected items {al_share:.0%} of {len(al)}" if al_share is not None else ""
    )
    worst = max(share, al_share or 0.0)
    status = "pass" if worst <= GUIDELINE_PASS else ("warn" if worst <= GUIDELINE_WARN else "fail")
    return _check(
        "guidelines",
        name,
        status,
        share,
        f"<= {GUIDELINE_PASS:.0%} (warn up to {GUIDELINE_WARN:.0%})",
        detail,
        ""
        if status == "pass"
        else "write the hard cases into the guidelines (the corrections' notes name them) before labelling more",
    )


def check_duplicates(d: dict) -> dict:
    name = "duplicates and leakage"
    share = d["pool_duplicates"] / d["pool"] if d["pool"] else 0.0
    detail = (
        f"{d['pool_duplicates']:,} exact-duplicate texts in a pool of {d['pool']:,} ({share:.1%}); "
        f"{d['leaked']:,} pool items repeat a test text"
    )
    if d["leaked"]:
        return _check(
            "duplicates",
            name,
            "fail",
            d["leaked"],
            "0 leaked, <= 1% duplicates",
            detail + " (e.g. " + ", ".join(d["leaked_examples"]) + ")",
            "remove the leaked items from the pool (or the test split): labelling them is labelling the test",
        )
    status = "pass" if share <= DUPLICATE_WARN else "warn"
    return _check(
        "duplicates",
        name,
        status,
        share,
        "0 leaked, <= 1% duplicates",
        detail,
        ""
        if status == "pass"
        else "duplicates are left out of selection, but they weigh in the pool size: deduplicate before importing",
    )


def readiness(project, feats=None) -> dict:
    """Every check and warning sign of a project (reads the store and the features)."""
    from labelloop.core.engine.coldstart import seed_adequacy  # noqa: F401  (the same minimum the loop uses)
    from labelloop.core.loop.al_round import features_for, pool_state
    from labelloop.core.measure.agreement import agreement_report
    from labelloop.core.store import reports

    cfg = project.config
    store = project.store
    rows = reports.measurements(store)
    for r in rows:
        r["created_at"] = to_datetime(r.get("created_at"))
    latest = rows[-1] if rows else None
    st = reports.project_status(project)
    if not st["items"]["total"] and not manifest_path(project.dir).exists():
        raise LabelloopError(
            f"{project.dir} has no items yet, so there is nothing to check; import some first: "
            f"labelloop import {project.dir} FILE --text-col text"
        )
    labelled_counts = {c: 0 for c in cfg.labels}
    for k, v in st["final_labels"].items():
        for c in k.split("|"):
            if c in labelled_counts:
                labelled_counts[c] += v
    n_labels = sum(v for k, v in st["final_labels"].items() if k != "(unresolved)")
    retrains = reports.retrain_seconds(store)
    retrain_s = float(sum(r[1] or 0.0 for r in retrains))
    compute_s = float(latest["compute_seconds"]) if latest else retrain_s
    if feats is None:
        feats = features_for(project)
    state = pool_state(project, feats)
    pool_rows = np.flatnonzero(feats.splits == "pool")
    checks = [
        check_calibration(latest),
        check_cost(n_labels, compute_s, retrain_s, cfg),
        check_pool(rows, int(st["items"]["pool"])),
        check_distribution(feats, pool_rows, state.test_rows),
        check_cold_start(labelled_counts, cfg.labels, cfg.min_labels_per_class),
        check_guidelines(reports.correction_reasons(store)),
        check_duplicates(reports.duplicates_and_leakage(store)),
    ]
    ratings, arms = reports.annotation_ratings(store)
    agreement = agreement_report(ratings, arms=arms, bootstrap=300) if ratings else None
    batch = reports.metrics_rows(store)["batch"]
    import json

    signals = json.loads(batch[0]["signals"]) if batch and batch[0]["signals"] else {}
    signs = warning_signs(
        rows, agreement=agreement, signals=signals, batch_strategy=batch[0]["strategy"] if batch else None
    )
    from labelloop.core.measure.signs import cost_per_point

    costs = cost_per_point(rows, cfg.cost_per_label, cfg.compute_price_per_hour)
    ag = None
    if agreement:
        ag = {k: agreement.get(k) for k in ("n_items_overlap", "overall", "by_arm")}
    return {
        "checks": checks,
        "warnings": signs,
        "measurements": rows,
        "n_labels": n_labels,
        "cost_per_point": costs,
        "agreement": ag,
    }
