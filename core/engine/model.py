"""The classifier and its calibrated probabilities.

Multinomial logistic regression on the cached features (one-vs-rest for
multi-label), then calibration: temperature scaling by default, cross-fitted on
the labelled data (or fitted on a held-out calibration split once there are
enough labels), Platt scaling as an option. ``evaluate`` gives accuracy,
macro-F1, per-class precision and recall, ECE (15 bins, with counts), MCE,
Brier and NLL on the held-out test split.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from labelloop.core.engine.calibration import PlattCalibrator, brier, fit_temperature, nll, reliability, softmax_t
from labelloop.core.util.errors import ModelError

CALIBRATION_SPLIT_MIN = 2000  # from this many labels on, calibrate on a 20% split instead of cross-fitting


@dataclass
class LinearWeights:
    """The fitted weights of a linear classifier, as loaded from an artifact (what ``decision`` needs)."""

    coef_: np.ndarray
    intercept_: np.ndarray


def _logreg(class_weight: str | None, C: float, seed: int, tol: float = 1e-4) -> LogisticRegression:
    return LogisticRegression(
        C=C,
        max_iter=500,
        class_weight=None if class_weight in (None, "none") else class_weight,
        random_state=seed,
        tol=tol,
    )


def _fit_lr(X, y, class_weight, C, seed, sample_weight=None, init=None) -> LogisticRegression:
    """Fit, and never return the all-zero model lbfgs stops at when the starting gradient is already
    below tol (it happened with balanced, margin-selected batches of 1,000+ labels: n_iter_ == 0).
    ``init``: (coef, intercept) to start from (a warm start; same classes and width required)."""
    clf = _logreg(class_weight, C, seed)
    if init is not None:
        clf.set_params(warm_start=True)
        clf.coef_, clf.intercept_ = np.array(init[0], dtype=np.float64), np.array(init[1], dtype=np.float64)
    clf = clf.fit(X, y, sample_weight=sample_weight)
    if int(np.max(clf.n_iter_)) == 0 or not np.any(clf.coef_):
        clf = _logreg(class_weight, C, seed, tol=1e-10).fit(X, y, sample_weight=sample_weight)
    return clf


@dataclass
class CalibratedModel:
    """A fitted classifier with a calibration map. ``predict_proba(X)`` gives calibrated probabilities
    over ``classes_`` (label names)."""

    classes_: list[str]
    clf: LogisticRegression
    calibration: str = "temperature"
    temperature_: float = 1.0
    platt_: PlattCalibrator | None = None
    fit_seconds_: float = 0.0
    info: dict = field(default_factory=dict)

    def decision(self, X) -> np.ndarray:
        logits = X @ self.clf.coef_.T.astype(np.float32)
        if sp.issparse(logits):
            logits = logits.toarray()
        logits = np.asarray(logits, dtype=np.float64) + self.clf.intercept_
        if logits.shape[1] == 1:  # binary sklearn model: one score; expand to two logits
            logits = np.hstack([-logits / 2, logits / 2])
        return logits

    def calibrate_logits(self, logits: np.ndarray) -> np.ndarray:
        if self.calibration == "platt" and self.platt_ is not None:
            return self.platt_.transform(logits)
        t = self.temperature_ if self.calibration == "temperature" else 1.0
        return softmax_t(logits, t)

    def predict_proba(self, X) -> np.ndarray:
        return self.calibrate_logits(self.decision(X))

    def uncalibrated_proba(self, X) -> np.ndarray:
        return softmax_t(self.decision(X), 1.0)

    def proba_pair(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated, raw) probabilities from one pass over ``X``: the calibrated ones are shown and
        measured; query strategies rank on the raw ones (see core/engine/strategies.py)."""
        logits = self.decision(X)
        return self.calibrate_logits(logits), softmax_t(logits, 1.0)


def model_state(model) -> tuple[dict, dict[str, np.ndarray]]:
    """A model as JSON-able metadata and numeric arrays (stored without pickle; core/engine/artifacts.py)."""
    meta = {
        "kind": "multilabel" if isinstance(model, MultiLabelModel) else "multiclass",
        "classes": list(model.classes_),
        "calibration": model.calibration,
        "temperature": float(model.temperature_),
        "fit_seconds": float(model.fit_seconds_),
        "info": {k: v for k, v in model.info.items() if isinstance(v, (int, float, str, bool, type(None)))},
    }
    if isinstance(model, MultiLabelModel):
        d = next((c.coef_.shape[1] for c in model.clfs if not isinstance(c, float)), 0)
        coef = np.zeros((len(model.clfs), d))
        intercept = np.zeros(len(model.clfs))
        const = np.zeros(len(model.clfs), dtype=np.int8)
        for j, c in enumerate(model.clfs):
            if isinstance(c, float):
                const[j], intercept[j] = 1, c
            else:
                coef[j], intercept[j] = c.coef_[0], c.intercept_[0]
        return meta, {"coef": coef, "intercept": intercept, "constant": const, "n_features": np.array([d])}
    arrays = {
        "coef": np.asarray(model.clf.coef_, dtype=np.float64),
        "intercept": np.asarray(model.clf.intercept_, dtype=np.float64),
    }
    if model.platt_ is not None:
        arrays["platt_coef"] = np.asarray(model.platt_.coef_, dtype=np.float64)
        arrays["platt_intercept"] = np.asarray(model.platt_.intercept_, dtype=np.float64)
    return meta, arrays


def model_from_state(meta: dict, arrays: dict[str, np.ndarray], *, where: str):
    """Rebuild a model from ``model_state`` output, checking every shape (a crafted file is refused)."""
    from labelloop.core.engine.artifacts import ArtifactError, require

    try:
        kind, classes = meta["kind"], meta["classes"]
        calibration, temperature = meta["calibration"], float(meta["temperature"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{where}: the model's settings are incomplete; the file is damaged.") from None
    require(
        isinstance(classes, list)
        and len(classes) >= 1
        and all(isinstance(c, str) for c in classes)
        and len(set(classes)) == len(classes),
        where,
        "the class list is invalid",
    )
    require(calibration in ("temperature", "platt", "none"), where, f"unknown calibration {calibration!r}")
    require(np.isfinite(temperature) and temperature > 0, where, "the temperature is not a positive number")
    coef, intercept = arrays.get("coef"), arrays.get("intercept")
    require(
        coef is not None and intercept is not None and coef.ndim == 2 and intercept.ndim == 1,
        where,
        "the weights are missing or have the wrong shape",
    )
    require(
        bool(np.all(np.isfinite(coef))) and bool(np.all(np.isfinite(intercept))), where, "the weights are not finite"
    )
    k = len(classes)
    if kind == "multilabel":
        const = arrays.get("constant")
        require(
            coef.shape[0] == k and intercept.shape == (k,) and const is not None and const.shape == (k,),
            where,
            "the weights do not match the classes",
        )
        clfs = [
            float(intercept[j]) if const[j] else LinearWeights(coef[j : j + 1], intercept[j : j + 1]) for j in range(k)
        ]
        return MultiLabelModel(
            list(classes),
            clfs,
            calibration,
            temperature,
            fit_seconds_=float(meta.get("fit_seconds", 0.0)),
            info=dict(meta.get("info") or {}),
        )
    require(kind == "multiclass", where, f"unknown model kind {kind!r}")
    rows = 1 if k == 2 else k
    require(
        k >= 2 and coef.shape[0] == rows and intercept.shape == (rows,), where, "the weights do not match the classes"
    )
    model = CalibratedModel(
        list(classes),
        LinearWeights(coef, intercept),
        calibration,
        temperature,
        fit_seconds_=float(meta.get("fit_seconds", 0.0)),
        info=dict(meta.get("info") or {}),
    )
    if "platt_coef" in arrays:
        pc, pi = arrays["platt_coef"], arrays.get("platt_intercept")
        require(pi is not None and pc.shape == (k,) and pi.shape == (k,), where, "the Platt parameters do not match")
        model.platt_ = PlattCalibrator()
        model.platt_.coef_, model.platt_.intercept_ = pc, pi
    return model


def check_trainable(y_names: list[str]) -> None:
    present = sorted(set(y_names))
    if len(present) < 2:
        which = f"only '{present[0]}'" if present else "none"
        raise ModelError(
            f"training needs labels of at least two classes; the labelled pool has {which}. "
            "Label more items (the cold-start batch mixes classes) and try again."
        )


def fit_model(
    X,
    y_names: list[str],
    classes: list[str],
    *,
    calibration: str = "temperature",
    class_weight: str | None = None,
    C: float = 100.0,
    seed: int = 0,
    folds: int = 5,
    sample_weight: np.ndarray | None = None,
    held_out: str = "crossfit",
    warm_from: "CalibratedModel | None" = None,
) -> CalibratedModel:
    """Fit the classifier on all labelled rows and a calibration map on held-out predictions.
    ``sample_weight`` (e.g. the loop's class-prior correction) weights the fit and the calibration.

    ``held_out``: where the held-out logits come from. "crossfit" refits the model on ``folds`` folds
    (or a 20% split from 2,000 labels on); "alo" uses approximate leave-one-out logits of the fitted
    model (``alo_logits``: no refit, a few percent of a fit's time; the simulator uses it).
    ``warm_from``: a model fitted on other labels of the same classes to start the solver from (the
    simulator's previous round; the optimum is the same, lbfgs gets there in fewer iterations)."""
    check_trainable(y_names)
    started = time.perf_counter()
    present = [c for c in classes if c in set(y_names)]
    index = {c: i for i, c in enumerate(present)}
    y = np.array([index[v] for v in y_names])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # many classes and few labels (TREC-50 at its seed set): scikit-learn asks whether y is a
        # regression target; it is not, and the warning would reach the user's terminal
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        init = None
        if (
            warm_from is not None
            and list(warm_from.classes_) == present
            and isinstance(warm_from.clf, LogisticRegression)
            and warm_from.clf.coef_.shape[1] == X.shape[1]
        ):
            init = (warm_from.clf.coef_, warm_from.clf.intercept_)
        clf = _fit_lr(X, y, class_weight, C, seed, sample_weight, init=init)
        model = CalibratedModel(present, clf, calibration)
        if calibration != "none":
            if held_out == "alo" and class_weight in (None, "none") and len(y) <= ALO_MAX_ROWS:
                logits, y_held, w_held = alo_logits(model, X, y, C, sample_weight), y, sample_weight
                model.info["calibration_held_out"] = "approximate leave-one-out"
            else:
                logits, y_held, w_held = _held_out_logits(X, y, class_weight, C, seed, folds, sample_weight)
                if not len(y_held):
                    model.info["calibration_skipped"] = (
                        "every class needs two labels for cross-fitted calibration; "
                        f"{int(np.sum(np.bincount(y) < 2))} class(es) have one"
                    )
            if len(y_held):
                if calibration == "temperature":
                    model.temperature_ = fit_temperature(logits, y_held, w_held)
                else:
                    model.platt_ = PlattCalibrator().fit(logits, y_held)
            model.info["calibration_n"] = int(len(y_held))
    model.fit_seconds_ = time.perf_counter() - started
    return model


ALO_MAX_ROWS = 3000  # the n x n systems of alo_logits; beyond, cross-fitting (a 20% split) is cheaper


def alo_logits(model: CalibratedModel, X, y: np.ndarray, C: float, sample_weight=None) -> np.ndarray:
    """Approximate leave-one-out logits of an L2-regularised logistic regression (one Newton step
    from the full fit, as in Rad & Maleki, "A scalable estimate of the out-of-sample prediction
    error via approximate leave-one-out", JRSS-B 2020), in the dual: with K = X X^T + 1 (the 1 for
    the intercept) and per class the curvature d = w p (1 - p) and gradient g = w (p - y),
    z_-i = z_i + h_i g_i / (1 - h_i d_i), h = diag(K (D K + I/C)^-1). For the multinomial model the
    cross-class curvature is left out (one block per class). Measured against 5-fold cross-fitting
    on TREC-6 and SMS spam (bench/bench_simulate_speed.py), the temperatures fitted on these logits
    give the same or lower test ECE."""
    Z = model.decision(X)  # (n, k), binary expanded to [-s/2, s/2]
    n, k = Z.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    K = X @ X.T
    K = (K.toarray() if sp.issparse(K) else np.asarray(K)).astype(np.float64) + 1.0
    lam = np.eye(n) / C
    P = softmax_t(Z, 1.0)
    Y = np.zeros_like(P)
    Y[np.arange(n), y] = 1.0
    out = Z.copy()
    if k == 2:  # one score s = z1 - z0 with logistic loss: one system
        p = P[:, 1]
        d, g = w * p * (1 - p), w * (p - Y[:, 1])
        h = np.diag(np.linalg.solve((d[:, None] * K + lam).T, K.T).T)
        s = (Z[:, 1] - Z[:, 0]) + h * g / np.maximum(1 - h * d, 1e-6)
        return np.column_stack([-s / 2, s / 2])
    for c in range(k):
        p = P[:, c]
        d, g = w * p * (1 - p), w * (p - Y[:, c])
        h = np.diag(np.linalg.solve((d[:, None] * K + lam).T, K.T).T)
        out[:, c] = Z[:, c] + h * g / np.maximum(1 - h * d, 1e-6)
    return out


def _held_out_logits(X, y, class_weight, C, seed, folds, sample_weight=None):
    """Out-of-fold logits (cross-fitting), or a 20% calibration split once labels are plentiful;
    with the held-out rows' sample weights (None when unweighted)."""
    counts = np.bincount(y)
    k = int(min(folds, counts.min()))
    if k < 2:
        return np.zeros((0, len(counts))), np.zeros(0, dtype=int), None
    rng = np.random.default_rng(seed)
    if len(y) >= CALIBRATION_SPLIT_MIN:
        splits = [next(StratifiedKFold(5, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))]
    else:
        splits = StratifiedKFold(k, shuffle=True, random_state=int(rng.integers(1 << 30))).split(np.zeros(len(y)), y)
    out_logits, out_y, out_w = [], [], []
    for tr, te in splits:
        if len(np.unique(y[tr])) < len(counts):
            continue
        w_tr = None if sample_weight is None else sample_weight[tr]
        m = CalibratedModel(list(range(len(counts))), _fit_lr(X[tr], y[tr], class_weight, C, seed, w_tr), "none")
        out_logits.append(m.decision(X[te]))
        out_y.append(y[te])
        out_w.append(None if sample_weight is None else sample_weight[te])
    if not out_logits:
        return np.zeros((0, len(counts))), np.zeros(0, dtype=int), None
    return np.vstack(out_logits), np.concatenate(out_y), (None if sample_weight is None else np.concatenate(out_w))


def majority_baseline(y_names: list[str]) -> dict:
    """The accuracy of always predicting the test split's most frequent class (or label set): what any
    accuracy must beat to mean something."""
    if not y_names:
        return {}
    values, counts = np.unique(np.array(y_names, dtype=object), return_counts=True)
    i = int(np.argmax(counts))
    return {"majority_baseline": float(counts[i] / len(y_names)), "majority_class": str(values[i])}


def evaluate(model: CalibratedModel, X, y_names: list[str], all_classes: list[str]) -> dict:
    """Test-split metrics for the calibrated model (and the ECE it would have uncalibrated)."""
    if len(y_names) == 0:
        return {"n_test": 0}
    probs = model.predict_proba(X)
    index = {c: i for i, c in enumerate(model.classes_)}
    known = np.array([v in index for v in y_names])
    # Test items of a class the model has never seen count as errors (their true class has p = 0).
    y = np.array([index.get(v, -1) for v in y_names])
    pred = probs.argmax(axis=1)
    pred_names = [model.classes_[i] for i in pred]
    acc = float(accuracy_score(y_names, pred_names))
    labels_present = [c for c in all_classes if c in set(y_names) | set(pred_names)]
    prec, rec, f1, support = precision_recall_fscore_support(
        y_names, pred_names, labels=labels_present, zero_division=0
    )
    rel = reliability(probs[known], y[known]) if known.any() else reliability(probs[:0], y[:0])
    raw = model.uncalibrated_proba(X)
    return {
        "n_test": int(len(y_names)),
        "accuracy": acc,
        **majority_baseline(y_names),
        "macro_f1": float(f1_score(y_names, pred_names, labels=labels_present, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(labels_present, prec, rec, f1, support)
        },
        "ece": rel["ece"],
        "mce": rel["mce"],
        "ece_uncalibrated": reliability(raw[known], y[known])["ece"] if known.any() else None,
        "brier": brier(probs[known], y[known]) if known.any() else None,
        "nll": nll(probs[known], y[known]) if known.any() else None,
        "reliability": {k: rel[k] for k in ("bin_edges", "bin_counts", "bin_confidence", "bin_accuracy")},
        "temperature": model.temperature_ if model.calibration == "temperature" else None,
    }


# --- multi-label: one binary logistic regression per label (one-vs-rest) ---------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass
class MultiLabelModel:
    """One-vs-rest logistic regression. ``predict_proba`` gives each label's own calibrated probability
    (rows do not sum to 1); the suggestion is every label at 0.5 or above."""

    classes_: list[str]
    clfs: list
    calibration: str = "temperature"
    temperature_: float = 1.0
    fit_seconds_: float = 0.0
    multi_label: bool = True
    info: dict = field(default_factory=dict)

    def decision(self, X) -> np.ndarray:
        cols = []
        for clf in self.clfs:
            if isinstance(clf, float):  # a label that was always (or never) present: a constant logit
                cols.append(np.full(X.shape[0], clf))
            else:
                z = X @ clf.coef_.T.astype(np.float32)
                z = z.toarray() if sp.issparse(z) else np.asarray(z)
                cols.append(z.ravel() + clf.intercept_[0])
        return np.column_stack(cols).astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        t = self.temperature_ if self.calibration == "temperature" else 1.0
        return _sigmoid(self.decision(X) / t)

    def uncalibrated_proba(self, X) -> np.ndarray:
        return _sigmoid(self.decision(X))

    def proba_pair(self, X) -> tuple[np.ndarray, np.ndarray]:
        logits = self.decision(X)
        t = self.temperature_ if self.calibration == "temperature" else 1.0
        return _sigmoid(logits / t), _sigmoid(logits)


def _binary_nll(logits: np.ndarray, Y: np.ndarray, t: float) -> float:
    p = np.clip(_sigmoid(logits / t), 1e-12, 1 - 1e-12)
    return float(-np.mean(Y * np.log(p) + (1 - Y) * np.log(1 - p)))


def label_matrix(y_lists: list[list[str]], classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    Y = np.zeros((len(y_lists), len(classes)), dtype=np.int8)
    for r, labels in enumerate(y_lists):
        for lab in labels:
            if lab in index:
                Y[r, index[lab]] = 1
    return Y


def check_trainable_multi(Y: np.ndarray, classes: list[str]) -> None:
    varied = [c for j, c in enumerate(classes) if 0 < Y[:, j].sum() < len(Y)]
    if not varied:
        raise ModelError(
            "training needs at least one label that some labelled items have and others lack; "
            "label more items and try again."
        )


def fit_multilabel(
    X,
    y_lists: list[list[str]],
    classes: list[str],
    *,
    calibration: str = "temperature",
    class_weight: str | None = None,
    C: float = 100.0,
    seed: int = 0,
    folds: int = 5,
) -> MultiLabelModel:
    from scipy.optimize import minimize_scalar

    Y = label_matrix(y_lists, classes)
    check_trainable_multi(Y, classes)
    started = time.perf_counter()

    def fit_all(Xs, Ys):
        out = []
        for j in range(len(classes)):
            col = Ys[:, j]
            if col.min() == col.max():
                out.append(8.0 if col[0] else -8.0)
            else:
                out.append(_fit_lr(Xs, col, class_weight, C, seed))
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # many classes and few labels (TREC-50 at its seed set): scikit-learn asks whether y is a
        # regression target; it is not, and the warning would reach the user's terminal
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        model = MultiLabelModel(list(classes), fit_all(X, Y), calibration)
        if calibration != "none" and len(Y) >= 2 * folds:
            from sklearn.model_selection import KFold

            logits, targets = [], []
            for tr, te in KFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(Y))):
                fold = MultiLabelModel(list(classes), fit_all(X[tr], Y[tr]), "none")
                logits.append(fold.decision(X[te]))
                targets.append(Y[te])
            L, T = np.vstack(logits), np.vstack(targets)
            res = minimize_scalar(
                lambda lt: _binary_nll(L, T, np.exp(lt)),
                bounds=(np.log(0.05), np.log(20.0)),
                method="bounded",
                options={"xatol": 1e-4},
            )
            model.temperature_ = float(np.exp(res.x))
            model.info["calibration_n"] = int(len(T))
    model.fit_seconds_ = time.perf_counter() - started
    return model


def evaluate_multilabel(model: MultiLabelModel, X, y_lists: list[list[str]], all_classes: list[str]) -> dict:
    if len(y_lists) == 0:
        return {"n_test": 0}
    P = model.predict_proba(X)
    Y = label_matrix(y_lists, model.classes_)
    pred = (P >= 0.5).astype(np.int8)
    prec, rec, f1, support = precision_recall_fscore_support(Y, pred, zero_division=0)
    # Calibration over every (item, label) decision, as binary predictions.
    p_flat = P.ravel()
    probs2 = np.column_stack([1 - p_flat, p_flat])
    rel = reliability(probs2, Y.ravel().astype(int))
    raw = model.uncalibrated_proba(X).ravel()
    return {
        "n_test": int(len(y_lists)),
        "accuracy": float(np.mean((pred == Y).all(axis=1))),  # exact set match
        **majority_baseline(["|".join(sorted(y)) for y in y_lists]),
        "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(Y, pred, average="micro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for c, p, r, f, s in zip(model.classes_, prec, rec, f1, support)
        },
        "ece": rel["ece"],
        "mce": rel["mce"],
        "ece_uncalibrated": reliability(np.column_stack([1 - raw, raw]), Y.ravel().astype(int))["ece"],
        "brier": float(np.mean((P - Y) ** 2)),
        "nll": _binary_nll(np.log(np.clip(P, 1e-12, 1) / np.clip(1 - P, 1e-12, 1)), Y, 1.0),
        "reliability": {k: rel[k] for k in ("bin_edges", "bin_counts", "bin_confidence", "bin_accuracy")},
        "temperature": model.temperature_ if model.calibration == "temperature" else None,
    }
