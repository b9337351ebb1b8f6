"""Which features (and how much regularisation) a model version uses, chosen by evidence.

``choose_features`` cross-validates logistic regression on the labels so far for each candidate:
TF-IDF, embeddings, and TF-IDF beside embeddings with the embedding block weighted 0.5, 1 or 2. The
best mean accuracy wins (ties go to the earlier, simpler candidate); then the inverse regularisation
strength C is chosen the same way for the winner from {1, 10, 100}. The evidence (each candidate's
mean and standard deviation over folds, the fold count, the labels used) is returned with the
choice, stored with the model version and shown in ``status`` and the metrics pane.

Classes with fewer labels than folds stay in every training fold and are never tested (a class with
a single label cannot be cross-validated); with fewer than two labels in every class nothing can be
cross-validated and the fallback is named with its reason.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from labelloop.core.engine.features import combine

FEATURE_KINDS = ("auto", "tfidf", "embed", "tfidf+embed")
EMBED_WEIGHTS = (0.5, 1.0, 2.0)
C_GRID = (1.0, 10.0, 100.0)
C_DEFAULT = 10.0
FALLBACK = ("tfidf+embed", 1.0)
MAX_ROWS = 1000  # cross-validate on at most this many labels (a random sample beyond)
MAX_FOLDS = 3  # 3 folds: the choice needs a ranking, not a precise estimate
CV_TOL = 1e-3  # likewise a looser solver tolerance (5x fewer iterations at C=100)


def candidates_for(kind: str) -> list[tuple[str, float]]:
    if kind == "auto":
        return [("tfidf", 1.0), ("embed", 1.0)] + [("tfidf+embed", w) for w in EMBED_WEIGHTS]
    if kind == "tfidf+embed":
        return [("tfidf+embed", w) for w in EMBED_WEIGHTS]
    return [(kind, 1.0)]


def name_of(mode: str, weight: float) -> str:
    return f"tfidf+embed x{weight:g}" if mode == "tfidf+embed" else mode


def _folds(y: np.ndarray, k_max: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    classes, counts = np.unique(y, return_counts=True)
    testable = counts >= 2
    if testable.sum() < 2:
        return []
    k = int(min(k_max, counts[testable].min()))
    fold_of = np.full(len(y), -1)
    for c, ok in zip(classes, testable):
        if not ok:
            continue
        members = rng.permutation(np.flatnonzero(y == c))
        fold_of[members] = np.arange(len(members)) % k
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(k)]


def cv_accuracy(X, y: np.ndarray, folds, C: float, seed: int) -> tuple[float, float, float]:
    """(mean accuracy, its standard deviation over folds, mean log-loss): accuracy decides, the
    log-loss breaks ties (frequent with few labels, where several candidates predict alike)."""
    accs, losses = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # many classes and few labels (TREC-50 at its seed set): scikit-learn asks whether y is a
        # regression target; it is not, and the warning would reach the user's terminal
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        for tr, te in folds:
            if len(np.unique(y[tr])) < 2:
                continue
            clf = LogisticRegression(C=C, max_iter=300, tol=CV_TOL, random_state=seed).fit(X[tr], y[tr])
            P = clf.predict_proba(X[te])
            accs.append(float(np.mean(clf.classes_[P.argmax(axis=1)] == y[te])))
            col = {c: i for i, c in enumerate(clf.classes_)}
            p_true = np.array([P[i, col[v]] if v in col else 0.0 for i, v in enumerate(y[te])])
            losses.append(float(-np.mean(np.log(np.clip(p_true, 1e-6, 1)))))
    if not accs:
        return float("nan"), float("nan"), float("nan")
    return float(np.mean(accs)), (float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0), float(np.mean(losses))


def _better(a: tuple, b: tuple | None) -> bool:
    """(accuracy, log-loss) a beats b: higher accuracy, or equal accuracy and lower log-loss."""
    if b is None:
        return True
    if not np.isfinite(a[0]):
        return False
    if not np.isfinite(b[0]) or a[0] > b[0] + 1e-9:
        return True
    return abs(a[0] - b[0]) <= 1e-9 and a[1] < b[1] - 1e-9


def _ev(mean: float, sd: float) -> list:
    return [round(mean, 4) if np.isfinite(mean) else None, round(sd, 4) if np.isfinite(sd) else None]


def choose_features(
    T, E, rows: np.ndarray, y, *, kind: str = "auto", seed: int = 0, choose_c: bool = True, max_rows: int = MAX_ROWS
) -> dict:
    """The features and C for a model trained on ``rows`` with labels ``y``.

    ``T``: TF-IDF matrix (CSR, all items), ``E``: embeddings (all items) or None. Returns
    {"mode", "weight", "C", "name", "evidence": {name: [mean, sd]}, "c_evidence", "folds", "n", "reason"}."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=object)
    rows = np.asarray(rows)
    if len(rows) > max_rows:
        keep = np.sort(rng.choice(len(rows), max_rows, replace=False))
        rows, y = rows[keep], y[keep]
    cands = candidates_for(kind)
    if E is None:
        cands = [c for c in cands if c[0] == "tfidf"] or [("tfidf", 1.0)]
    out = {"kind": kind, "n": int(len(rows)), "evidence": {}, "c_evidence": {}, "folds": 0, "reason": ""}
    folds = _folds(y, MAX_FOLDS, rng)
    if not folds:
        mode, w = cands[0] if len(cands) == 1 else (FALLBACK if E is not None else ("tfidf", 1.0))
        out.update(
            mode=mode,
            weight=w,
            C=C_DEFAULT,
            name=name_of(mode, w),
            reason="not cross-validated: fewer than two classes have two labels or more",
        )
        return out
    out["folds"] = len(folds)
    T_lab = T[rows] if T is not None else None
    E_lab = np.asarray(E[rows], dtype=np.float32) if E is not None else None
    idx = np.arange(len(rows))
    best = best_key = None
    for mode, w in cands:
        X = combine(T_lab, E_lab, idx, mode, w)
        mean, sd, loss = cv_accuracy(X, y, folds, C_DEFAULT, seed)
        out["evidence"][name_of(mode, w)] = _ev(mean, sd)
        if _better((mean, loss), best_key):
            best, best_key = (mode, w, X), (mean, loss)
    if best is None:
        best = (cands[0][0], cands[0][1], combine(T_lab, E_lab, idx, *cands[0]))
    mode, w, X = best
    C = C_DEFAULT
    if choose_c:
        best_c = (best_key, C_DEFAULT)  # the default keeps ties
        out["c_evidence"][f"{C_DEFAULT:g}"] = out["evidence"][name_of(mode, w)]
        for c in C_GRID:
            if c == C_DEFAULT:
                continue
            mean, sd, loss = cv_accuracy(X, y, folds, c, seed)
            out["c_evidence"][f"{c:g}"] = _ev(mean, sd)
            if _better((mean, loss), best_c[0]):
                best_c = ((mean, loss), c)
        C = best_c[1]
    out.update(
        mode=mode,
        weight=w,
        C=C,
        name=name_of(mode, w),
        reason=f"{len(folds)}-fold cross-validated accuracy on {len(rows)} labels",
    )
    return out
