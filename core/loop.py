"""The active-learning loop: retrain -> calibrate -> evaluate -> score the pool -> select -> queue.

``train_and_queue`` is what ``labelloop train`` and the workstation's retrain run.
With too few labels to train (fewer than two classes) it fills the queue by the
project's cold-start method instead. Every queued item keeps why it was chosen.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from core import coldstart
from core.errors import EmptyPoolError, LabelloopError, ModelError
from core.features import FeatureSet, load_or_build_features
from core.model import CalibratedModel, MultiLabelModel, evaluate, evaluate_multilabel, fit_model, fit_multilabel
from core.project import Project
from core.store import utcnow
from core.strategies import (ML_STRATEGIES, ML_UNCERTAINTY, UNCERTAINTY, Selection, bald, cal_scores,
                             check_strategy, select_batch, vote_entropy)

SCORE_CHUNK = 100_000
COMMITTEE_SIZE = 5
STOP_SET_SIZE = 1000
STOP_KAPPA = 0.99
STOP_ROUNDS = 3
CONVERGENCE_RATIO = 3.0


@dataclass
class PoolState:
    feats: FeatureSet
    labelled_rows: np.ndarray
    y: list[str]                   # first label (single-label projects)
    test_rows: np.ndarray
    y_test: list[str]
    y_lists: list[list[str]] = field(default_factory=list)        # every label (multi-label projects)
    y_test_lists: list[list[str]] = field(default_factory=list)
    candidate_rows: np.ndarray = None  # pool rows that may be queued (no label, skip or flag yet)


@dataclass
class TrainReport:
    model_version: int | None
    batch_id: int | None
    batch_size: int
    strategy: str
    n_train: int
    metrics: dict = field(default_factory=dict)
    adequacy: dict = field(default_factory=dict)
    signals: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def features_for(project: Project, featurizer=None) -> FeatureSet:
    cache = project.cache_dir if featurizer is None else project.cache_dir / "imported"
    return load_or_build_features(project.store, cache, hashing_above=project.config.hashing_above,
                                  featurizer=featurizer)


def pool_state(project: Project, feats: FeatureSet) -> PoolState:
    s = project.store
    labelled = s.rows("""SELECT i.ord, f.labels FROM final_labels f JOIN items i ON i.id = f.item_id
                         WHERE i.split = 'pool' AND f.labels IS NOT NULL ORDER BY f.deciding_event""")
    test = s.rows("SELECT ord, gold_label FROM items WHERE split = 'test' AND gold_label IS NOT NULL ORDER BY ord")
    taken = s.rows("""SELECT DISTINCT i.ord FROM effective_events e JOIN items i ON i.id = e.item_id
                      WHERE e.kind IN ('label', 'skip', 'flag')""")
    mask = feats.splits == "pool"
    if taken:
        mask[feats.rows_for_ords([t[0] for t in taken])] = False
    return PoolState(
        feats=feats,
        labelled_rows=feats.rows_for_ords([r[0] for r in labelled]),
        y=[r[1][0] for r in labelled],
        test_rows=feats.rows_for_ords([r[0] for r in test]),
        y_test=[r[1][0] for r in test],
        y_lists=[list(r[1]) for r in labelled],
        y_test_lists=[list(r[1]) for r in test],
        candidate_rows=np.flatnonzero(mask),
    )


def score_pool(model: CalibratedModel, X, rows: np.ndarray, strategy: str, *, committee=None,
               X_lab=None, p_lab=None, chunk: int = SCORE_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(scores, calibrated probabilities) for the given pool rows, in vectorised chunks."""
    n = len(rows)
    probs = np.empty((n, len(model.classes_)), dtype=np.float32)
    scores = np.empty(n, dtype=np.float64)
    base = "margin" if strategy in ("diversity", "power", "random") else strategy
    multi = isinstance(model, MultiLabelModel)
    if multi and strategy not in ML_STRATEGIES:
        raise LabelloopError(f"strategy '{strategy}' is not available for multi-label projects; "
                             f"use one of {', '.join(ML_STRATEGIES)}.")
    table = ML_UNCERTAINTY if multi else UNCERTAINTY
    for start in range(0, n, chunk):
        Xc = X[rows[start:start + chunk]]
        p = model.predict_proba(Xc)
        probs[start:start + chunk] = p
        if base in table:
            scores[start:start + chunk] = table[base](p)
        elif base in ("bald", "qbc"):
            stack = np.stack([m.predict_proba(Xc) for m in committee])
            scores[start:start + chunk] = bald(stack) if base == "bald" else vote_entropy(stack)
        elif base == "cal":
            scores[start:start + chunk] = cal_scores(Xc, p, X_lab, p_lab)
    return scores, probs


def fit_committee(X, y: list[str], classes: list[str], model: CalibratedModel, rng, k: int = COMMITTEE_SIZE,
                  class_weight=None) -> list[CalibratedModel]:
    """K models on bootstrap resamples, sharing the main model's temperature."""
    y_arr = np.array(y)
    members = []
    for _ in range(k):
        for _attempt in range(10):
            idx = rng.integers(0, len(y_arr), size=len(y_arr))
            if len(set(y_arr[idx])) == len(set(y_arr)):
                break
        m = fit_model(X[idx], list(y_arr[idx]), classes, calibration="none", class_weight=class_weight,
                      seed=int(rng.integers(1 << 30)))
        m.calibration, m.temperature_ = "temperature", model.temperature_
        if m.classes_ == model.classes_:  # a resample that lost a class cannot vote on it: leave it out
            members.append(m)
    if len(members) < 2:
        raise ModelError("could not build a committee of two or more models with every class; label more items "
                         "of the rare classes or use the margin strategy.")
    return members


def batch_similarity(X, rows: np.ndarray) -> float:
    """Mean pairwise cosine similarity of the rows (features are L2-normalised)."""
    if len(rows) < 2:
        return 0.0
    Xb = X[rows]
    S = (Xb @ Xb.T)
    S = S.toarray() if hasattr(S, "toarray") else np.asarray(S)
    n = len(rows)
    return float((S.sum() - np.trace(S)) / (n * (n - 1)))


def _next_id(store, table: str, col: str) -> int:
    return int(store.scalar(f"SELECT coalesce(max({col}), 0) + 1 FROM {table}"))


def _save_artifact(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pickle.dumps(obj))
    os.replace(tmp, path)


def load_model(project: Project, version: int) -> dict:
    row = project.store.rows("SELECT artifact FROM models WHERE version = ?", [version])
    if not row:
        raise LabelloopError(f"model version {version} does not exist.")
    with open(project.models_dir / row[0][0], "rb") as f:
        return pickle.load(f)


def latest_model_version(project: Project) -> int | None:
    return project.store.scalar("SELECT max(version) FROM models")


def stop_set_ords(project: Project) -> np.ndarray:
    rows = project.store.rows(f"SELECT ord FROM items WHERE split = 'pool' ORDER BY hash(id), id LIMIT {STOP_SET_SIZE}")
    return np.array(sorted(r[0] for r in rows), dtype=np.int64)


def train_and_queue(project: Project, *, strategy: str | None = None, batch_size: int | None = None,
                    seed: int | None = None, retrain: bool = True, progress=None) -> TrainReport:
    """Retrain (when there are labels of two classes), then refill the queue with a new batch.

    ``progress(fraction, message)`` is called between steps; raising from it cancels the run."""
    cfg = project.config
    strategy = check_strategy(strategy or cfg.strategy)
    if cfg.multi_label and strategy not in ML_STRATEGIES:
        raise LabelloopError(f"strategy '{strategy}' is not available for multi-label projects; "
                             f"use one of {', '.join(ML_STRATEGIES)}.")
    explicit_batch = batch_size
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
    timings: dict[str, float] = {}
    step = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    step(0.05, "features")
    feats = features_for(project)
    timings["features"] = time.perf_counter() - t0
    state = pool_state(project, feats)
    counts = {c: sum(c in labs for labs in state.y_lists) for c in cfg.labels}
    adequacy = coldstart.seed_adequacy(counts, cfg.labels, cfg.min_labels_per_class)
    report = TrainReport(None, None, 0, strategy, len(state.y), adequacy=adequacy, seconds=timings)
    if len(state.candidate_rows) == 0:
        raise EmptyPoolError("every pool item is labelled, skipped or flagged; import more items to go on.")

    model = None
    if cfg.multi_label:  # one-vs-rest: trainable once some label is present on some items and absent on others
        trainable = any(0 < n < len(state.y_lists) for n in counts.values())
    else:
        trainable = len(set(state.y)) >= 2
    if retrain and trainable:
        step(0.2, "training")
        t = time.perf_counter()
        X_lab = feats.X[state.labelled_rows]
        if cfg.multi_label:
            model = fit_multilabel(X_lab, state.y_lists, cfg.labels, calibration=cfg.calibration,
                                   class_weight=cfg.class_weight, seed=int(rng.integers(1 << 30)))
        else:
            model = fit_model(X_lab, state.y, cfg.labels, calibration=cfg.calibration,
                              class_weight=cfg.class_weight, seed=int(rng.integers(1 << 30)))
        timings["train"] = time.perf_counter() - t
        step(0.5, "evaluating")
        X_test = feats.X[state.test_rows]
        if not len(state.test_rows):
            metrics = {"n_test": 0}
        elif cfg.multi_label:
            metrics = evaluate_multilabel(model, X_test, state.y_test_lists, cfg.labels)
        else:
            metrics = evaluate(model, X_test, state.y_test, cfg.labels)
        report.metrics = metrics
        report.model_version = _store_model(project, model, feats, state, metrics, timings, report)
    elif trainable:
        v = latest_model_version(project)
        if v is not None:
            model = load_model(project, v)["model"]
            report.model_version = v
    else:
        imported = _imported_scorer(project)
        if imported is not None:
            model, version, fz = imported
            feats = features_for(project, featurizer=fz)
            state = pool_state(project, feats)
            report.model_version = version

    step(0.7, "scoring the pool")
    t = time.perf_counter()
    # The first (cold-start) batch is the seed set: [strategy] seed_size; later batches batch_size.
    batch_size = explicit_batch or (cfg.seed_size if model is None else cfg.batch_size)
    if model is None:
        selection, probs = _cold_start_batch(project, feats, state, batch_size, rng)
        report.strategy = f"cold start: {cfg.cold_start}"
    elif not trainable and cfg.cold_start == "stratified":
        # An imported model's predicted classes stratify the first batch: every class gets its share.
        probs = np.vstack([model.predict_proba(feats.X[state.candidate_rows[i:i + SCORE_CHUNK]])
                           for i in range(0, len(state.candidate_rows), SCORE_CHUNK)])
        picked = coldstart.stratified_seed(probs.argmax(axis=1), len(model.classes_), batch_size, rng)
        m = len(picked)
        selection = Selection(picked, ["cold start: stratified"] * m, np.full(m, np.nan), np.arange(1, m + 1),
                              np.full(m, np.nan), np.zeros(m, dtype=bool))
        report.strategy = "cold start: stratified"
    else:
        committee = X_lab_c = p_lab = None
        if strategy in ("bald", "qbc"):
            committee = fit_committee(feats.X[state.labelled_rows], state.y, cfg.labels, model, rng,
                                      class_weight=cfg.class_weight)
        if strategy == "cal":
            X_lab_c = feats.X[state.labelled_rows]
            p_lab = model.predict_proba(X_lab_c)
        scores, probs = score_pool(model, feats.X, state.candidate_rows, strategy, committee=committee,
                                   X_lab=X_lab_c, p_lab=p_lab)
        pool_X = feats.X[state.candidate_rows] if strategy == "diversity" else None
        selection = select_batch(strategy, len(state.candidate_rows), batch_size, rng=rng,
                                 audit_share=cfg.audit_share, scores=scores, X_pool=pool_X)
    timings["score_select"] = time.perf_counter() - t
    step(0.9, "queueing")
    report.signals = _signals(project, feats, state, selection, rng, report)
    report.batch_id = _write_batch(project, state, selection, probs, model, report)
    report.batch_size = len(selection)
    report.warnings = warnings_for(report)
    timings["total"] = time.perf_counter() - t0
    step(1.0, "done")
    return report


def _imported_scorer(project: Project):
    row = project.store.rows("SELECT version FROM models WHERE origin = 'imported' ORDER BY version DESC LIMIT 1")
    if not row:
        return None
    art = load_model(project, row[0][0])
    return art["model"], row[0][0], art["featurizer"]


def _cold_start_batch(project: Project, feats: FeatureSet, state: PoolState, k: int, rng) -> tuple[Selection, None]:
    cfg = project.config
    rows = state.candidate_rows
    n = len(rows)
    method = cfg.cold_start
    flags = None
    if method == "keyword":
        query = coldstart.check_seed_query(cfg.seed_query)
        matched_ords = [r[0] for r in project.store.rows(
            "SELECT ord FROM items WHERE split = 'pool' AND regexp_matches(text, ?, 'i')", [query])]
        matched_rows = feats.rows_for_ords(matched_ords) if matched_ords else np.zeros(0, dtype=np.int64)
        pos = np.flatnonzero(np.isin(rows, matched_rows))
        picked, flags = coldstart.keyword_seed(pos, n, k, rng)
    elif method == "typicality":
        picked = coldstart.typicality_seed(feats.X[rows], k, rng)
    else:  # random; and stratified or model when no model exists yet to stratify or rank with
        picked = coldstart.random_seed(n, k, rng)
        if method in ("stratified", "model"):
            method = f"random (no model yet for {method})"
    m = len(picked)
    sel = Selection(index=picked, strategy=[f"cold start: {method}" + (" (keyword match)" if flags is not None and f else "")
                                            for f in (flags if flags is not None else [False] * m)],
                    score=np.full(m, np.nan), rank=np.arange(1, m + 1), percentile=np.full(m, np.nan),
                    audit=np.zeros(m, dtype=bool))
    return sel, None


def _store_model(project: Project, model: CalibratedModel, feats: FeatureSet, state: PoolState, metrics: dict,
                 timings: dict, report: TrainReport) -> int:
    s = project.store
    version = _next_id(s, "models", "version")
    project.models_dir.mkdir(exist_ok=True)
    artifact = f"model_v{version}.pkl"
    _save_artifact(project.models_dir / artifact, {"model": model, "featurizer": feats.featurizer,
                                                   "features_fingerprint": feats.fingerprint,
                                                   "labels": project.config.labels})
    # Stopping signal: agreement of successive models' predictions on a fixed stop set.
    stop_ords = stop_set_ords(project)
    p_stop = model.predict_proba(feats.X[feats.rows_for_ords(stop_ords)])
    if isinstance(model, MultiLabelModel):  # the predicted label set, as one category
        pred_names = np.array(["|".join(c for c, on in zip(model.classes_, row) if on) for row in p_stop >= 0.5],
                              dtype=object)
    else:
        pred_names = np.array(model.classes_, dtype=object)[p_stop.argmax(axis=1)]
    np.save(project.models_dir / f"stopset_v{version}.npy", np.array(list(zip(stop_ords, pred_names)), dtype=object),
            allow_pickle=True)
    prev = s.scalar("SELECT max(version) FROM models WHERE origin = 'trained'")
    kappa = None
    if prev is not None and (project.models_dir / f"stopset_v{prev}.npy").exists():
        old = dict(np.load(project.models_dir / f"stopset_v{prev}.npy", allow_pickle=True))
        common = [(old[o], p) for o, p in zip(stop_ords, pred_names) if o in old]
        if common:
            a, b = zip(*common)
            kappa = 1.0 if list(a) == list(b) else float(cohen_kappa_score(a, b))
    n_audit = project.store.scalar("""SELECT count(*) FROM final_labels f JOIN events e ON e.event_id = f.deciding_event
                                      WHERE e.audit AND f.labels IS NOT NULL""")
    stored = {**metrics, "stop_kappa": kappa, "n_train": len(state.y), "n_audit_labels": int(n_audit or 0),
              "label_counts": report.adequacy["per_class"], "fit_seconds": model.fit_seconds_,
              "calibration_n": model.info.get("calibration_n")}
    s.con.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [version, utcnow(), len(state.y), model.classes_, model.calibration,
                   model.temperature_ if model.calibration == "temperature" else None,
                   timings.get("train"), None, json.dumps(stored), artifact, "trained"])
    report.metrics = stored
    return version


def _signals(project: Project, feats: FeatureSet, state: PoolState, sel: Selection, rng, report: TrainReport) -> dict:
    main = state.candidate_rows[sel.index[~sel.audit]]
    sample = rng.choice(state.candidate_rows, size=min(len(main), len(state.candidate_rows)), replace=False)
    sim = batch_similarity(feats.X, main)
    base = batch_similarity(feats.X, sample)
    kappas = []
    for (m,) in project.store.rows("SELECT metrics FROM models WHERE origin = 'trained' ORDER BY version DESC LIMIT ?",
                                   [STOP_ROUNDS]):
        k = json.loads(m).get("stop_kappa") if m else None
        kappas.append(k)
    stable = len(kappas) == STOP_ROUNDS and all(k is not None and k >= STOP_KAPPA for k in kappas)
    return {"batch_similarity": sim, "pool_similarity": base,
            "convergence_ratio": (sim / base) if base > 0 else None,
            "converging": bool(base > 0 and sim / base >= CONVERGENCE_RATIO),
            "stop_kappas": kappas, "stop": stable}


def warnings_for(report: TrainReport) -> list[str]:
    out = []
    m = report.metrics or {}
    if isinstance(m.get("ece"), float) and m["ece"] > 0.10:
        out.append(f"ECE {m['ece']:.3f} on the test split is above 0.10: uncertainty is poorly calibrated, "
                   "so uncertainty sampling may not beat random.")
    if not report.adequacy.get("adequate", True):
        short = ", ".join(f"{c} needs {n} more" for c, n in report.adequacy["short"].items())
        out.append(f"Seed set below {report.adequacy['minimum']} labels per class: {short}.")
    sig = report.signals or {}
    if sig.get("stop"):
        out.append(f"Stopping signal: predictions on the stop set agreed (kappa >= {STOP_KAPPA}) for "
                   f"{STOP_ROUNDS} rounds; more labels are unlikely to change the model much.")
    if sig.get("converging"):
        out.append(f"Batch convergence: this batch is {sig['convergence_ratio']:.1f}x more self-similar than a random "
                   "batch; the strategy is concentrating on one region (consider diversity or more audit).")
    if m.get("n_test", 1) == 0:
        out.append("No held-out test split: accuracy and calibration cannot be measured (import items with split=test).")
    return out


def _write_batch(project: Project, state: PoolState, sel: Selection, probs, model, report: TrainReport) -> int:
    s = project.store
    rows = state.candidate_rows[sel.index]
    ids = state.feats.ids[rows]
    with s.transaction() as con:
        batch_id = con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchone()[0]
        con.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [batch_id, utcnow(), report.model_version, report.strategy, len(sel), int(sel.audit.sum()),
                     len(state.candidate_rows), json.dumps(report.signals)])
        values = []
        for pos, (item_id, i) in enumerate(zip(ids, sel.index)):
            p = None
            if probs is not None and model is not None:
                p = json.dumps({c: round(float(v), 6) for c, v in zip(model.classes_, probs[i])})
            values.append([batch_id, pos, str(item_id), sel.strategy[pos],
                           None if np.isnan(sel.score[pos]) else float(sel.score[pos]),
                           int(sel.rank[pos]) if sel.rank[pos] else None,
                           None if np.isnan(sel.percentile[pos]) else float(sel.percentile[pos]),
                           bool(sel.audit[pos]), report.model_version, p])
        if values:
            con.executemany("INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
    return batch_id


def queued_items(project: Project, n: int | None = None, *, exclude_actor_done: str | None = None) -> list[dict]:
    """The current batch's items not yet decided, in queue order, with why each was chosen."""
    limit = f"LIMIT {int(n)}" if n else ""
    return project.store.dicts(f"""
        SELECT q.position, q.item_id, i.text, i.metadata, q.strategy, q.score, q.rank, q.percentile, q.audit,
               q.model_version, q.probs, q.batch_id
        FROM queue q JOIN items i ON i.id = q.item_id
        WHERE q.batch_id = (SELECT max(batch_id) FROM batches)
          AND NOT EXISTS (SELECT 1 FROM effective_events e WHERE e.item_id = q.item_id
                          AND e.kind IN ('label', 'skip', 'flag'))
        ORDER BY q.position {limit}""")
