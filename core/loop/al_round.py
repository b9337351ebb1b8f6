"""The active-learning loop: retrain -> calibrate -> evaluate -> score the pool -> select -> queue.

``train_and_queue`` is what ``labelloop train`` and the workstation's retrain run.
With too few labels to train (fewer than two classes) it fills the queue by the
project's cold-start method instead. Every queued item keeps why it was chosen.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

from labelloop.core.engine import auto, coldstart
from labelloop.core.engine.artifacts import ArtifactError
from labelloop.core.engine.auto import arm_of
from labelloop.core.engine.features import (
    FeatureCacheError,
    FeatureSet,
    load_cached_features,
    load_or_build_features,
)
from labelloop.core.engine.model import (
    CalibratedModel,
    MultiLabelModel,
    evaluate,
    evaluate_multilabel,
    fit_model,
    fit_multilabel,
)
from labelloop.core.engine.modelfile import read_model_file, save_model_file
from labelloop.core.engine.strategies import (
    QueryStrategy,
    Round,
    Selection,
    assemble_batch,
    get_strategy,
    n_audit_for,
    select_batch,
)
from labelloop.core.loop.autoround import arm_scores, cal_sample, next_state, split_batch
from labelloop.core.loop.batch import (
    STOP_ROUNDS,
    PoolState,
    RoundOutput,
    TrainReport,
    blind_round,
    cold_start_batch,
    duplicates_note,
    open_audit_candidates,
    signals,
    state_from,
    warnings_for,
    write_batch,
)
from labelloop.core.loop.batch import (
    trainable as _trainable,
)
from labelloop.core.loop.featurejob import build_features, plan_features
from labelloop.core.loop.poolround import external_batch, load_pool_featurizer, plan_external
from labelloop.core.store import rounds
from labelloop.core.store.project import Project
from labelloop.core.util.errors import EmptyPoolError, LabelloopError, ModelError
from labelloop.core.util.faults import fault_point
from labelloop.core.util.safeio import atomic_write_text

SCORE_CHUNK = 100_000
STOP_SET_SIZE = 1000


def store_features(store, cache_dir, **kw):
    """``load_or_build_features`` for the items of ``store``."""
    return load_or_build_features(store.items_state(), store.item_arrays, cache_dir, **kw)


def features_for(project: Project, featurizer=None) -> FeatureSet:
    cache = project.cache_dir if featurizer is None else project.cache_dir / "imported"
    return store_features(
        project.store,
        cache,
        hashing_above=project.config.hashing_above,
        featurizer=featurizer,
        embeddings=project.config.features != "tfidf",
    )


def use_latest_features(project: Project, feats: FeatureSet) -> dict | None:
    """Set ``feats`` to the features of the latest trained model (what its numbers were measured on)."""
    v = rounds.latest_trained_version(project.store)
    choice = (rounds.model_metrics(project.store, v) or {}).get("features") if v is not None else None
    if isinstance(choice, dict) and choice.get("mode") in ("tfidf", "embed", "tfidf+embed"):
        if choice["mode"] == "tfidf" or feats.E is not None:
            feats.use(choice["mode"], float(choice.get("weight", 1.0)))
            return choice
    return None


def decide_features(cfg, feats: FeatureSet, rows: np.ndarray, y: list, prev: dict | None, seed: int) -> dict:
    """The features of the next model: ``[features] kind`` when fixed (the embedding weight and C still
    cross-validated), or the best by cross-validation for ``auto``. A decision is kept until the labels
    double (or the setting changes), so a retrain does not pay for it every time."""
    from labelloop.core.engine.featuresel import C_DEFAULT, choose_features

    kind = cfg.features
    if cfg.multi_label:  # one-vs-rest models: the selection is not evaluated there
        mode = "tfidf" if kind == "auto" else kind
        return {
            "kind": kind,
            "mode": mode,
            "weight": 1.0,
            "C": 100.0,
            "name": mode,
            "n": len(rows),
            "evidence": {},
            "reason": "multi-label project: the setting is used as it is (auto means tfidf)",
        }
    if (
        prev
        and prev.get("kind") == kind
        and prev.get("mode")
        and prev.get("folds")
        and len(rows) < 2 * int(prev.get("decided_at", prev.get("n", 0)) or 0)
        and (prev["mode"] == "tfidf" or feats.E is not None)
    ):
        return {**prev, "reused": True}
    choice = choose_features(feats.T, feats.E, rows, y, kind=kind, seed=seed)
    choice["decided_at"] = int(len(rows))
    choice.setdefault("C", C_DEFAULT)
    return choice


def _labelled(store) -> list:
    return rounds.labelled(store)


def _test_split(store) -> list:
    return rounds.test_split(store)


def _decided_ords(store) -> list:
    return rounds.decided_ords(store)


def pool_state(project: Project, feats: FeatureSet) -> PoolState:
    s = project.store
    return state_from(feats, _labelled(s), _test_split(s), _decided_ords(s))


def _arms(labelled: list) -> list[str]:
    """Each labelled row's arm: 'audit' (random-audit control), 'cold' (the cold start) or 'al'."""
    return [
        "audit" if a else ("cold" if (st or "").startswith("cold start") or not st else "al")
        for _o, _l, st, a in labelled
    ]


def prior_correction(y: list[str], origins: list[str], min_random: int = 5) -> np.ndarray | None:
    """Sample weights that undo the class bias of keyword seeding.

    A keyword-seeded batch is half matches (mostly one class) and half random draws; trained as is,
    the model learns the seed's class shares, not the pool's (the demo's first model predicted spam
    for most messages). The random draws (the seed's random half and every random-audit item) are an
    unbiased sample of the pool: each class is weighted by its share there (add-one smoothed) over its
    share in the training set. Only while keyword matches are in the training set and at least
    ``min_random`` random labels exist; otherwise None (no correction)."""
    if "keyword" not in origins:
        return None
    y_arr = np.array(y, dtype=object)
    rand = y_arr[np.array([o == "random" for o in origins], dtype=bool)]
    if len(rand) < min_random:
        return None
    classes = sorted(set(y))
    prior = np.array([(np.sum(rand == c) + 1.0) / (len(rand) + len(classes)) for c in classes])
    share = np.array([np.mean(y_arr == c) for c in classes])
    w_class = dict(zip(classes, prior / share))
    w = np.array([w_class[v] for v in y], dtype=np.float64)
    return w * (len(w) / w.sum())


def score_pool(
    model: CalibratedModel,
    X,
    rows: np.ndarray,
    strategy: QueryStrategy | str,
    rnd: Round | None = None,
    *,
    N=None,
    chunk: int = SCORE_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, calibrated probabilities) for the given pool rows, in vectorised chunks. The strategy
    scores the raw probabilities (core/engine/strategies.py says why); the calibrated ones are what the
    annotator is shown. ``rnd``: what ``strategy.prepare`` made of the round; ``N``: the neighbour space
    (default ``X``)."""
    strategy = get_strategy(strategy, multi_label=isinstance(model, MultiLabelModel))
    rnd = rnd or Round(model=model, multi_label=isinstance(model, MultiLabelModel))
    n = len(rows)
    probs = np.empty((n, len(model.classes_)), dtype=np.float32)
    scores = np.empty(n, dtype=np.float64)
    for start in range(0, n, chunk):
        Xc = X.lazy(rows[start : start + chunk]) if hasattr(X, "lazy") else X[rows[start : start + chunk]]
        p, raw = model.proba_pair(Xc)
        probs[start : start + chunk] = p
        Nc = Xc if N is None else N[rows[start : start + chunk]]
        scores[start : start + chunk] = strategy.score(raw, Xc, Nc, rnd)
    return scores, probs


def batch_similarity(X, rows: np.ndarray) -> float:
    """Mean pairwise cosine similarity of the rows (features are L2-normalised)."""
    if len(rows) < 2:
        return 0.0
    Xb = X[rows]
    S = Xb @ Xb.T
    S = S.toarray() if hasattr(S, "toarray") else np.asarray(S)
    n = len(rows)
    return float((S.sum() - np.trace(S)) / (n * (n - 1)))


def load_model(project: Project, version: int) -> dict:
    """{"model", "featurizer", "meta"} of a stored model version, from its safe artifact file."""
    name = rounds.model_artifact(project.store, version)
    if name is None:
        raise LabelloopError(f"model version {version} does not exist.")
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise ArtifactError(f"model v{version}: its artifact name {name!r} is not a file in {project.models_dir}.")
    if name.endswith(".pkl"):
        raise ArtifactError(
            f"model v{version} was saved by an older labelloop as a pickle ({name}), which is never "
            "loaded from a project folder (it could run code); retrain with labelloop train."
        )
    return read_model_file(project.models_dir / name, what=f"model v{version} file")


def latest_model_version(project: Project) -> int | None:
    return rounds.latest_model_version(project.store)


_STOP_SET_MEMO: dict = {}


def stop_set_ords(project: Project) -> np.ndarray:
    """A fixed sample of pool items (by a hash of the id) whose predictions are compared between models.
    It changes only when items are added, so it is computed once per item set (sorting a million hashes
    at every retrain took CPU the screen needed)."""
    key = (str(project.store.path), *project.store.items_state())
    if key not in _STOP_SET_MEMO:
        _STOP_SET_MEMO.clear()
        _STOP_SET_MEMO[key] = rounds.stop_set_ords(project.store, STOP_SET_SIZE)
    return _STOP_SET_MEMO[key]


@dataclass
class RoundInput:
    """Everything one round of the loop needs from the store, read up front (``plan_round``), so that
    the computing (``compute_round``) can run where the store is not: in another process."""

    config: object
    cache_dir: str
    fingerprint: str
    strategy: str
    batch_size: int | None
    seed: int
    retrain: bool
    labelled: list  # (ord, labels, strategy, audit) in deciding order
    test: list  # (ord, reference labels)
    taken_ords: list  # decided pool items
    open_audit_ords: list  # audit items of the current batch nobody decided yet
    keyword_ords: list | None
    stop_ords: np.ndarray
    prev_stop: dict | None
    prev_version: int | None
    prev_kappas: list
    latest: tuple | None = None  # (version, model) to reuse when not retraining
    imported: tuple | None = None  # (version, model) of an imported first scorer
    feats: FeatureSet | None = None  # in-process only: the features plan_round already has
    features_seconds: float = 0.0  # what loading (or building) them took in plan_round
    prev_features: dict | None = None  # the latest trained model's feature choice (re-decided as labels double)
    build: object | None = None  # a FeatureBuild when the training process must build the cache first
    prev_bandit: dict | None = None  # strategy "auto": the bandit as the latest trained model left it
    external: object | None = None  # an ExternalRound (core/loop/poolround.py) when the pool is external


def train_and_queue(
    project: Project,
    *,
    strategy: str | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    retrain: bool = True,
    progress=None,
) -> TrainReport:
    """Retrain (when there are labels of two classes), then refill the queue with a new batch.

    ``progress(fraction, message)`` is called between steps; raising from it cancels the run.
    The round is planned from the store, computed, and committed to the store; the workstation runs
    the same three steps with the computing in a child process (``tui/app.py``)."""
    report = blind_round(project, strategy=strategy, batch_size=batch_size, seed=seed)
    if report is not None:  # a cold start chosen without a model or features
        return report
    inp = plan_round(project, strategy=strategy, batch_size=batch_size, seed=seed, retrain=retrain)
    out = compute_round(inp, progress=progress)
    return commit_round(project, inp, out)


def plan_round(
    project: Project,
    *,
    strategy: str | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    retrain: bool = True,
    keep_features: bool = True,
) -> RoundInput:
    """Read what a round needs from the store (and make sure the feature cache is current)."""
    cfg = project.config
    strategy = get_strategy(strategy or cfg.strategy, multi_label=cfg.multi_label).name
    if batch_size is not None and batch_size < 1:
        raise LabelloopError(f"--batch must be at least 1, got {batch_size}.")
    s = project.store
    labelled = _labelled(s)
    trainable = _trainable(cfg, [lab for _o, lab, _s, _a in labelled])
    latest = imported = None
    featurizer = None
    if not (retrain and trainable):
        if trainable:
            v = latest_model_version(project)
            if v is not None:
                latest = (v, load_model(project, v)["model"])
        else:
            v = rounds.latest_imported_version(s)
            if v is not None:
                art = load_model(project, v)
                imported, featurizer = (v, art["model"]), art["featurizer"]
    external = plan_external(project)
    featurizer, cache, embeddings = _feature_plan(project, featurizer, external)
    t_features = time.perf_counter()
    build = None
    if keep_features:
        feats = store_features(s, cache, hashing_above=cfg.hashing_above, featurizer=featurizer, embeddings=embeddings)
    else:  # the training process loads the cache, or builds it from a snapshot of the items
        feats, build = plan_features(
            s,
            cache,
            hashing_above=cfg.hashing_above,
            featurizer=featurizer,
            embeddings=embeddings,
            snapshot_dir=project.cache_dir,
        )
    t_features = time.perf_counter() - t_features
    keyword = None
    if cfg.cold_start == "keyword" and not labelled:
        query = coldstart.check_seed_query(cfg.seed_query)
        keyword = rounds.keyword_ords(s, query)
    prev = rounds.latest_trained_version(s)
    kappas = rounds.recent_stop_kappas(s, STOP_ROUNDS)
    prev_metrics = (rounds.model_metrics(s, prev) or {}) if prev is not None else {}
    prev_features, prev_bandit = prev_metrics.get("features"), prev_metrics.get("bandit")
    return RoundInput(
        config=cfg,
        cache_dir=str(cache),
        fingerprint=feats.fingerprint if isinstance(feats, FeatureSet) else feats,
        strategy=strategy,
        batch_size=batch_size,
        seed=seed if seed is not None else int.from_bytes(os.urandom(4), "little"),
        retrain=retrain,
        labelled=labelled,
        test=_test_split(s),
        taken_ords=_decided_ords(s),
        open_audit_ords=rounds.open_audit_ords(s),
        keyword_ords=keyword,
        stop_ords=stop_set_ords(project),
        prev_stop=_read_stop_set(project, prev) if prev is not None else None,
        prev_version=prev,
        prev_kappas=kappas,
        latest=latest,
        imported=imported,
        feats=feats if isinstance(feats, FeatureSet) else None,
        build=build,
        features_seconds=t_features,
        prev_features=prev_features if isinstance(prev_features, dict) else None,
        prev_bandit=prev_bandit if isinstance(prev_bandit, dict) else None,
        external=external,
    )


def _feature_plan(project: Project, featurizer, external) -> tuple:
    """(featurizer, cache folder, embeddings?) of the round: an imported model's featurizer, or the
    external pool's (the project's items are featurised as the pool is, so the model scores it)."""
    if external is not None:
        return load_pool_featurizer(project.dir), project.cache_dir / "external", False
    cache = project.cache_dir if featurizer is None else project.cache_dir / "imported"
    return featurizer, cache, project.config.features != "tfidf"


_FEATURES_MEMO: dict = {}


def _round_features(inp: RoundInput) -> FeatureSet:
    """The round's features: handed over in process, else read from the cache (and kept for the next
    round in a long-lived worker process)."""
    if inp.feats is not None:
        return inp.feats
    key = (inp.cache_dir, inp.fingerprint)
    if key not in _FEATURES_MEMO:
        _FEATURES_MEMO.clear()
        if inp.build is not None:
            feats = build_features(inp.build)
            if feats.fingerprint != inp.fingerprint:
                raise FeatureCacheError("the items changed while their features were prepared; try again")
        else:
            feats = load_cached_features(Path(inp.cache_dir), inp.fingerprint)
        _FEATURES_MEMO[key] = feats
    return _FEATURES_MEMO[key]


def keep_round_features(cache_dir: str, feats: FeatureSet) -> None:
    """Keep ``feats`` (built ahead of a retrain, ``featurejob.prepare_features``) for the next round here."""
    _FEATURES_MEMO.clear()
    _FEATURES_MEMO[(cache_dir, feats.fingerprint)] = feats


def compute_round(inp: RoundInput, progress=None) -> RoundOutput:
    """Train, calibrate, evaluate, score and select: no store access (it may run in another process)."""
    fault_point("compute-round")
    cfg = inp.config
    rng = np.random.default_rng(inp.seed)
    timings: dict[str, float] = {}
    step = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    step(0.05, "features")
    feats = _round_features(inp)
    # loaded here, or in plan_round when handed over in process
    timings["features"] = time.perf_counter() - t0 + (inp.features_seconds if inp.feats is not None else 0.0)
    state = state_from(feats, inp.labelled, inp.test, inp.taken_ords)
    counts = {c: sum(c in labs for labs in state.y_lists) for c in cfg.labels}
    adequacy = coldstart.seed_adequacy(counts, cfg.labels, cfg.min_labels_per_class)
    report = TrainReport(None, None, 0, inp.strategy, len(state.y), adequacy=adequacy, seconds=timings)
    out = RoundOutput(report)
    if len(state.candidate_rows) == 0 and inp.external is None:
        raise EmptyPoolError("every pool item is labelled, skipped or flagged; import more items to go on.")
    if feats.note:
        report.notes.append(feats.note)
    if state.n_duplicates_dropped:
        report.notes.append(duplicates_note(state.n_duplicates_dropped))
    model = None
    trainable = _trainable(cfg, state.y_lists)
    if inp.retrain and trainable:
        model = _train(inp, feats, state, rng, out, step)
    elif trainable:
        model = _reuse_latest(inp, feats, report)
    elif inp.imported is not None:
        report.model_version, model = inp.imported

    step(0.7, "scoring the pool")
    t = time.perf_counter()
    if inp.external is not None:
        _select_external(inp, model, rng, out)
        timings["score_select"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        return out
    selection, probs = _select(inp, feats, state, model, trainable, rng, report)
    timings["score_select"] = time.perf_counter() - t
    step(0.9, "queueing")
    report.signals = _signals(feats, state, selection, rng, report, inp)
    out.selection, out.pool_size = selection, int(len(state.candidate_rows))
    out.selected_ids = [str(i) for i in feats.ids[state.candidate_rows[selection.index]]]
    if probs is not None:
        out.selected_probs, out.scorer = np.asarray(probs[selection.index], dtype=np.float64), model
    timings["total"] = time.perf_counter() - t0
    return out


def _fit(cfg, X_lab, state, choice: dict, rng, report: TrainReport):
    """The round's model on the labelled rows; keyword-seeded labels reweighted to the class shares of
    the random labels (the prior correction), said in the report."""
    if cfg.multi_label:
        model = fit_multilabel(
            X_lab,
            state.y_lists,
            cfg.labels,
            calibration=cfg.calibration,
            class_weight=cfg.class_weight,
            seed=int(rng.integers(1 << 30)),
        )
    else:
        weights = prior_correction(state.y, state.origins) if cfg.class_weight == "none" else None
        model = fit_model(
            X_lab,
            state.y,
            cfg.labels,
            calibration=cfg.calibration,
            C=float(choice["C"]),
            class_weight=cfg.class_weight,
            seed=int(rng.integers(1 << 30)),
            sample_weight=weights,
        )
        if weights is not None:
            model.info["prior_correction"] = json.dumps(
                {c: round(float(weights[state.y.index(c)]), 4) for c in sorted(set(state.y))}
            )
            report.notes.append(
                "class-prior correction: the keyword-seeded labels were reweighted to the class "
                "shares of the random labels ("
                + ", ".join(f"{c} x{w}" for c, w in json.loads(model.info["prior_correction"]).items())
                + ")."
            )
    return model


def _train(inp: RoundInput, feats: FeatureSet, state, rng, out: RoundOutput, step):
    """A new model: features chosen, trained (with the class-prior correction of keyword-seeded
    labels), calibrated, evaluated on the test split, the arms measured, the stop signal computed."""
    cfg, report, timings = inp.config, out.report, out.report.seconds
    step(0.15, "choosing features")
    t = time.perf_counter()
    choice = decide_features(
        cfg,
        feats,
        state.labelled_rows,
        state.y if not cfg.multi_label else [],
        inp.prev_features,
        int(rng.integers(1 << 30)),
    )
    feats.use(choice["mode"], choice["weight"])
    timings["choose_features"] = time.perf_counter() - t
    step(0.2, "training")
    t = time.perf_counter()
    model = _fit(cfg, feats.X[state.labelled_rows], state, choice, rng, report)
    timings["train"] = time.perf_counter() - t
    step(0.5, "evaluating")
    X_test = feats.X[state.test_rows]
    if not len(state.test_rows):
        metrics = {"n_test": 0}
    elif cfg.multi_label:
        metrics = evaluate_multilabel(model, X_test, state.y_test_lists, cfg.labels)
    else:
        metrics = evaluate(model, X_test, state.y_test, cfg.labels)
    metrics["features"] = choice
    report.metrics = metrics
    if not cfg.multi_label and len(state.test_rows):
        step(0.6, "measuring the arms")
        t = time.perf_counter()
        from labelloop.core.measure.signs import arm_curves

        out.arms = arm_curves(
            feats.X,
            state.labelled_rows,
            state.y,
            _arms(inp.labelled),
            state.test_rows,
            state.y_test,
            cfg.labels,
            C=float(choice["C"]),
            seed=inp.seed,
            reference=metrics.get("accuracy"),
        )
        timings["measure"] = time.perf_counter() - t
    if inp.strategy == "auto":
        step(0.65, "valuing the strategies")
        t = time.perf_counter()
        metrics["bandit"] = next_state(
            inp.prev_bandit,
            feats.X[state.labelled_rows],
            state.y,
            [arm_of(st) for _o, _l, st, _a in inp.labelled],
            [bool(a) for _o, _l, _st, a in inp.labelled],
            cfg.labels,
            float(choice["C"]),
            class_weight=cfg.class_weight,
            held_out=(X_test, state.y_test) if len(state.test_rows) else None,
        )
        timings["bandit"] = time.perf_counter() - t
    model.info["features_mode"], model.info["embed_weight"] = feats.mode, feats.embed_weight
    out.model, out.featurizer = model, feats.featurizer_in_use
    _stop_signal(inp, feats, model, out)
    return model


def _reuse_latest(inp: RoundInput, feats: FeatureSet, report: TrainReport):
    """The latest model version ranks this batch (a round that does not retrain), on its own features."""
    if inp.latest is None:
        return None
    v, model = inp.latest
    report.model_version = v
    mode = model.info.get("features_mode", "tfidf")
    if mode != "tfidf" and feats.E is None:
        raise ModelError(f"model v{v} uses sentence embeddings but they are not loaded; retrain instead.")
    feats.use(mode, float(model.info.get("embed_weight", 1.0)))
    if feats.X.shape[1] != _model_width(model):
        raise ModelError(
            f"model v{v} was trained on other features than the project's current ones; "
            "retrain (labelloop train) instead of reusing it."
        )
    return model


def _select(inp: RoundInput, feats: FeatureSet, state, model, trainable: bool, rng, report: TrainReport):
    """(the batch, the pool's probabilities or None): a cold-start batch without a model, a batch
    stratified by an imported model's classes, else the strategy's picks with the audit share."""
    cfg = inp.config
    # The first (cold-start) batch is the seed set: [strategy] seed_size; later batches batch_size.
    batch_size = inp.batch_size if inp.batch_size is not None else (cfg.seed_size if model is None else cfg.batch_size)
    carry = open_audit_candidates(feats, state, inp.open_audit_ords)
    if model is None:
        report.strategy = f"cold start: {cfg.cold_start}"
        return cold_start_batch(cfg, feats, state, batch_size, rng, carry, inp.keyword_ords), None
    if not trainable and cfg.cold_start == "stratified":
        # An imported model's predicted classes stratify the first batch: every class gets its share.
        X = feats.X
        probs = np.vstack(
            [
                model.predict_proba(
                    X.lazy(state.candidate_rows[i : i + SCORE_CHUNK])
                    if hasattr(X, "lazy")
                    else X[state.candidate_rows[i : i + SCORE_CHUNK]]
                )
                for i in range(0, len(state.candidate_rows), SCORE_CHUNK)
            ]
        )
        n = len(state.candidate_rows)
        k = min(batch_size, n)
        n_audit = n_audit_for(k, cfg.audit_share)
        eligible = np.setdiff1d(np.arange(n), carry)
        picked = eligible[
            coldstart.stratified_seed(probs[eligible].argmax(axis=1), len(model.classes_), k - n_audit, rng)
        ]
        m = len(picked)
        report.strategy = "cold start: stratified"
        return assemble_batch(
            picked,
            ["cold start: stratified"] * m,
            np.full(m, np.nan),
            np.full(m, np.nan),
            n,
            n_audit,
            rng,
            carry_audit=carry,
        ), probs
    strat = get_strategy(inp.strategy)
    if strat.name == "auto":
        return _auto_select(inp, feats, state, model, batch_size, carry, rng, report)
    # neighbours (CAL, diversity) are found in embedding space when embeddings are loaded
    rnd = strat.prepare(
        Round(
            model=model,
            X_lab=feats.X[state.labelled_rows],
            y_lab=state.y,
            N_lab=feats.neighbour_X[state.labelled_rows],
            classes=cfg.labels,
            rng=rng,
            class_weight=cfg.class_weight,
            multi_label=cfg.multi_label,
        )
    )
    scores, probs = score_pool(model, feats.X, state.candidate_rows, strat, rnd, N=feats.neighbour_X)
    pool_X = feats.neighbour_X[state.candidate_rows] if strat.name == "diversity" else None
    return select_batch(
        strat,
        len(state.candidate_rows),
        batch_size,
        rng=rng,
        audit_share=cfg.audit_share,
        scores=scores,
        X_pool=pool_X,
        carry_audit=carry,
    ), probs


def _select_external(inp: RoundInput, model, rng, out: RoundOutput) -> None:
    """The batch chosen over the external pool (core/loop/poolround.py); its new rows ride along to
    the commit, which makes them items."""
    cfg, report = inp.config, out.report
    batch_size = inp.batch_size if inp.batch_size is not None else (cfg.seed_size if model is None else cfg.batch_size)
    ext = external_batch(inp.external, cfg, model, inp.strategy, batch_size, rng, report)
    if model is None:
        report.strategy = f"cold start: {cfg.cold_start}"
    report.notes.append(f"external pool of {inp.external.manifest.n:,} items, scored {ext['compute']}")
    out.selection, out.pool_size, out.selected_ids = ext["selection"], ext["pool_size"], ext["ids"]
    out.new_items = ext["new_items"]
    if ext["probs"] is not None:
        out.selected_probs, out.scorer = ext["probs"], model
    report.signals = signals(None, None, _kappas(inp, report))


def _auto_select(inp: RoundInput, feats: FeatureSet, state, model, batch_size: int, carry, rng, report):
    """``strategy = "auto"``: the batch split among the bandit's arms by its shares (this round's, or the
    latest model's when not retraining), beside the untouched random-audit share."""
    cfg = inp.config
    bandit = (report.metrics or {}).get("bandit") or inp.prev_bandit or auto.initial_state()
    rows = state.candidate_rows
    n = len(rows)
    if n == 0:
        raise EmptyPoolError("the pool has no unlabelled items left to select.")
    k = min(batch_size, n)
    n_audit = n_audit_for(k, cfg.audit_share)
    carry = carry[:n_audit]
    scores, probs = arm_scores(
        model,
        feats.X,
        rows,
        N=feats.neighbour_X,
        X_lab=feats.X[state.labelled_rows],
        N_lab=feats.neighbour_X[state.labelled_rows],
        cal_rows=cal_sample(n, rng),
    )
    main, names, main_scores, pct = split_batch(
        bandit, scores, k - n_audit, rng, X_neighbours=feats.neighbour_X[rows], blocked=carry
    )
    report.notes.append("auto: " + auto.shares_line(bandit) + f" ({bandit.get('note', '')})")
    sel = assemble_batch(main, names, main_scores, pct, n, n_audit, rng, scores=scores["margin"], carry_audit=carry)
    return sel, probs


def commit_round(project: Project, inp: RoundInput, out: RoundOutput) -> TrainReport:
    """Store the round: the new model (artifact, stop set, row) and the new batch with its queue."""
    report = out.report
    if out.model is not None:
        report.model_version = _store_model(project, out, inp)
        _store_measurement(project, out, inp, report.model_version)
    model_version = report.model_version
    report.batch_id = write_batch(project, out, model_version)
    report.batch_size = len(out.selection)
    report.warnings = warnings_for(report)
    return report


def _model_width(model) -> int:
    if hasattr(model, "clf"):
        return int(model.clf.coef_.shape[1])
    return next((int(c.coef_.shape[1]) for c in model.clfs if not isinstance(c, float)), -1)


def _stop_signal(inp: RoundInput, feats: FeatureSet, model, out: RoundOutput) -> None:
    """Stopping signal: the new model's predictions on a fixed stop set, and their agreement (kappa)
    with the previous model's."""
    stop_ords = inp.stop_ords
    p_stop = model.predict_proba(feats.X[feats.rows_for_ords(stop_ords)])
    if isinstance(model, MultiLabelModel):  # the predicted label set, as one category
        preds = ["|".join(c for c, on in zip(model.classes_, row) if on) for row in p_stop >= 0.5]
    else:
        preds = [model.classes_[i] for i in p_stop.argmax(axis=1)]
    out.stop_predictions = preds
    kappa = None
    if inp.prev_version is not None and inp.prev_stop is None:
        out.report.notes.append(
            f"the stop-set predictions of model v{inp.prev_version} are missing or damaged; the "
            "stopping signal starts again from this model."
        )
    if inp.prev_stop:
        common = [(inp.prev_stop[o], p) for o, p in zip(stop_ords.tolist(), preds) if o in inp.prev_stop]
        if common:
            a, b = zip(*common)
            kappa = 1.0 if list(a) == list(b) else float(cohen_kappa_score(a, b))
    out.report.metrics = {**out.report.metrics, "stop_kappa": kappa}


def _store_model(project: Project, out: RoundOutput, inp: RoundInput) -> int:
    s = project.store
    model, report = out.model, out.report
    version = rounds.next_model_version(s)
    project.models_dir.mkdir(exist_ok=True)
    artifact = f"model_v{version}.npz"
    save_model_file(
        project.models_dir / artifact,
        model,
        out.featurizer,
        {"features_fingerprint": inp.fingerprint, "labels": project.config.labels, "version": version},
    )
    atomic_write_text(
        project.models_dir / f"stopset_v{version}.json",
        json.dumps({"ords": [int(o) for o in inp.stop_ords], "predictions": out.stop_predictions}, ensure_ascii=False),
    )
    n_audit = rounds.audit_label_count(s)
    stored = {
        **report.metrics,
        "n_train": report.n_train,
        "n_audit_labels": int(n_audit or 0),
        "label_counts": report.adequacy["per_class"],
        "fit_seconds": model.fit_seconds_,
        "calibration_n": model.info.get("calibration_n"),
    }
    rounds.insert_model(
        s,
        version,
        n_train=report.n_train,
        classes=list(model.classes_),
        calibration=model.calibration,
        temperature=model.temperature_ if model.calibration == "temperature" else None,
        train_seconds=report.seconds.get("train"),
        metrics=stored,
        artifact=artifact,
        origin="trained",
    )
    report.metrics = stored
    return version


def _store_measurement(project: Project, out: RoundOutput, inp: RoundInput, version: int) -> None:
    """The live measurement of this model version (core/measure/signs.py reads them all back)."""
    m = out.report.metrics or {}
    arms = _arms(inp.labelled)
    data = {
        k: m.get(k)
        for k in (
            "accuracy",
            "macro_f1",
            "majority_baseline",
            "ece",
            "ece_uncalibrated",
            "n_test",
            "stop_kappa",
            "per_class",
            "reliability",
        )
    }
    data["features"] = (m.get("features") or {}).get("name")
    if isinstance(m.get("bandit"), dict):  # strategy auto: the shares this version leaves
        data["auto_shares"] = m["bandit"].get("shares")
    data["arms"] = out.arms
    data["signals"] = {k: out.report.signals.get(k) for k in ("convergence_ratio", "converging", "stop")}
    # the warning signs as they stand with this version (the labelling screen's summary line reads them)
    from labelloop.core.measure.agreement import agreement_report
    from labelloop.core.measure.signs import warning_signs

    # error rate on the gold set by difficulty tier, as it stands with this version
    from labelloop.core.store import reports, review

    tiers: dict = {}
    for _actor, given, ref, tier in review.gold_answers(project.store, project.config.gold_tier_key):
        t = tiers.setdefault(tier or "(none)", {"n": 0, "errors": 0})
        t["n"] += 1
        t["errors"] += given != ref
    data["gold_error_by_tier"] = {k: {**v, "error_rate": v["errors"] / v["n"]} for k, v in sorted(tiers.items())}
    data["label_cost"] = len(inp.labelled) * project.config.cost_per_label
    ratings, item_arms = reports.annotation_ratings(project.store)
    agreement = agreement_report(ratings, arms=item_arms, bootstrap=0) if ratings else None
    previous = reports.measurements(project.store)
    data["warnings"] = [
        w["key"]
        for w in warning_signs(
            previous + [data], agreement=agreement, signals=out.report.signals, batch_strategy=out.report.strategy
        )
        if w["fires"]
    ]
    rounds.insert_measurement(
        project.store,
        version,
        n_labels=len(inp.labelled),
        n_al=arms.count("al"),
        n_audit=arms.count("audit"),
        n_cold=arms.count("cold"),
        compute_seconds=float(sum(v for k, v in out.report.seconds.items() if k != "total")),
        data=data,
    )


def _read_stop_set(project: Project, version: int) -> dict | None:
    """{ord: prediction} of a model version's stop set, or None when the file is missing or damaged
    (JSON only: nothing in it can run)."""
    try:
        data = json.loads((project.models_dir / f"stopset_v{version}.json").read_text(encoding="utf-8"))
        ords, preds = data["ords"], data["predictions"]
        if (
            len(ords) != len(preds)
            or not all(isinstance(o, int) for o in ords)
            or not all(isinstance(p, str) for p in preds)
        ):
            return None
        return dict(zip(ords, preds))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _signals(feats: FeatureSet, state: PoolState, sel: Selection, rng, report: TrainReport, inp: RoundInput) -> dict:
    main = state.candidate_rows[sel.index[~sel.audit]]
    sample = rng.choice(state.candidate_rows, size=min(len(main), len(state.candidate_rows)), replace=False)
    return signals(
        batch_similarity(feats.neighbour_X, main), batch_similarity(feats.neighbour_X, sample), _kappas(inp, report)
    )


def _kappas(inp: RoundInput, report: TrainReport) -> list:
    """The stop set's kappas, newest first: this round's when it trained a model."""
    kappas = list(inp.prev_kappas)
    if "stop_kappa" in report.metrics:
        kappas = [report.metrics["stop_kappa"], *kappas]
    return kappas


def queued_items(project: Project, n: int | None = None) -> list[dict]:
    """The current batch's undecided items (the store's ``open_queue``), in queue order, with why each
    was chosen."""
    if n is not None and n < 1:
        raise LabelloopError(f"--n must be at least 1, got {n}.")
    return project.store.open_queue(n)
