"""``labelloop simulate``: replay the loop on a fully labelled file, labels as the oracle.

It answers, before money is spent, whether active learning pays off on this kind of data, and
with which features: every strategy is run under every featurizer asked for (``--features``), on
the same seed sets and test split in each repeat, so that arms can be compared repeat by repeat.

What the verdict rests on, in order:
1. **Learnability**: a model trained on the whole pool must beat the majority-class rate (and
   chance) by more than its interval; otherwise nothing can be learned and no strategy matters.
2. **The seed set alone**: when the seed labels already reach the target, strategies are not
   compared on anything (said, with the count of repeats).
3. **Paired comparisons**: labels to reach the target (default 95% of the best full-pool accuracy;
   repeats that never reach it count at the budget), area under the learning curve and final
   accuracy, each as the mean of per-repeat differences with a percentile bootstrap interval
   over repeats. An interval that includes zero is "no measurable difference", never a winner;
   when it is too wide, the number of repeats that would resolve a difference of that size is said.
4. **Conditions** for the best active-learning arm: calibration judged on the models that selected
   (every round but the last), not only the final one; cost: the money saved on labels against
   the pipeline's overhead (compute, annotators waiting for each retrain, and a fixed engineering
   cost); pool at least 10x the labels needed.

Features and regularisation are chosen per repeat on the seed labels by cross-validation
(core/engine/featuresel.py). Calibration (temperature scaling) is fitted every round on approximate
leave-one-out logits (``core.model.alo_logits``), which costs a few percent of a fit instead of five
refits; a round whose calibration was skipped is counted and its reason given.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from labelloop.core.engine import coldstart
from labelloop.core.engine.auto import shares_line
from labelloop.core.engine.features import FEATURE_MODES, TextFeaturizer, combine
from labelloop.core.engine.featuresel import C_DEFAULT, FEATURE_KINDS, candidates_for, choose_features
from labelloop.core.engine.model import evaluate, fit_model
from labelloop.core.engine.strategies import STRATEGIES, Round, get_strategy, select_batch
from labelloop.core.loop.autoround import SimulatedAuto
from labelloop.core.loop.targets import TARGETS, pays_summary, target_table, verdict_lines
from labelloop.core.util.errors import InputFileError, LabelloopError
from labelloop.core.util.safeio import atomic_write

ECE_LIMIT = 0.10
POOL_RATIO = 10.0
PAYS_OFF_SAVING = 0.20
DEFAULT_REPEATS = 10
BOOTSTRAP = 2000


@dataclass
class SimConfig:
    strategies: list[str]
    seed_size: int = 50
    batch: int = 50
    budget: int = 500
    repeats: int = DEFAULT_REPEATS
    test_frac: float = 0.2
    seed_query: str | None = None
    target_frac: float = 0.95
    calibration: str = "temperature"
    cost_per_label: float = 0.10
    seconds_per_label: float = 15.0
    compute_price_per_hour: float = 0.50
    engineering_cost: float = 200.0  # money: setting up and running the AL pipeline (fixed)
    features: list[str] = field(default_factory=lambda: ["auto"])
    seed: int = 0
    # strategy "auto" only: a random-audit share beside its arms (0: like every other arm here, none; its
    # evidence is then the simulated project's test split alone)
    audit_share: float = 0.0
    evidence_size: int = 300  # strategy "auto" only: the simulated project's test split (pool items held out)
    targets: tuple = TARGETS  # fractions of the full-pool accuracy labels-to-target is given for


@dataclass
class SimReport:
    curves: pl.DataFrame
    summary: pl.DataFrame
    full_accuracy: float
    target: float
    verdict: str
    conditions: dict
    best_strategy: str | None
    saving: float | None
    pool_size: int
    test_size: int
    classes: list[str]
    seconds: float
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    learnable: dict = field(default_factory=dict)
    full_by_features: dict = field(default_factory=dict)
    best_features: str | None = None
    choices: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)  # labels to each target per arm (core/loop/targets.py)


def read_labelled(path: Path, text_col: str, label_col: str, split_col: str | None = None):
    """(texts, labels, splits or None) from CSV/TSV/JSONL/Parquet, with clear errors."""
    import duckdb

    from labelloop.core.store.imports import detect_format

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist.")
    fmt = detect_format(path)
    p = str(path).replace("'", "''")
    reader = {
        "csv": f"read_csv('{p}', header=true, all_varchar=true, delim=',', quote='\"', escape='\"')",
        "tsv": f"read_csv('{p}', header=true, all_varchar=true, delim='\\t', quote='\"', escape='\"')",
        "jsonl": f"read_json('{p}', format='newline_delimited')",
        "parquet": f"read_parquet('{p}')",
    }[fmt]
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        for flag, c in (("--text-col", text_col), ("--label-col", label_col), ("--split-col", split_col)):
            if c is not None and c not in cols:
                raise LabelloopError(
                    f"{path}: column '{c}' (asked for by {flag}) is missing; the file has: {', '.join(cols)}."
                )
        split_sql = f', CAST("{split_col}" AS VARCHAR)' if split_col else ""
        rows = con.execute(
            f'SELECT CAST("{text_col}" AS VARCHAR), CAST("{label_col}" AS VARCHAR){split_sql} FROM {reader}'
        ).fetchall()
    except duckdb.Error as exc:
        raise InputFileError(f"{path}: cannot be read ({str(exc).splitlines()[0]}).") from None
    finally:
        con.close()
    bad = next((i for i, r in enumerate(rows, 1) if not r[0] or not r[0].strip() or not r[1] or not r[1].strip()), None)
    if bad is not None:
        col = text_col if not rows[bad - 1][0] or not rows[bad - 1][0].strip() else label_col
        raise LabelloopError(f"{path}: row {bad}, column '{col}' is empty; every row needs a text and a label.")
    texts = [r[0] for r in rows]
    labels = [r[1].strip() for r in rows]
    splits = [(r[2] or "").strip().lower() for r in rows] if split_col else None
    return texts, labels, splits


def _split(labels: np.ndarray, splits, test_frac: float, rng) -> tuple[np.ndarray, np.ndarray]:
    n = len(labels)
    if splits is not None and any(s == "test" for s in splits):
        test = np.array([s == "test" for s in splits])
        return np.flatnonzero(~test), np.flatnonzero(test)
    test_idx = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test_idx.extend(members[: int(round(test_frac * len(members)))])
    test = np.zeros(n, dtype=bool)
    test[test_idx] = True
    return np.flatnonzero(~test), np.flatnonzero(test)


def validate(cfg: SimConfig, labels: list[str]) -> None:
    unknown = [s for s in cfg.strategies if s not in STRATEGIES]
    if unknown:
        raise LabelloopError(f"unknown strategy name(s) {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}.")
    if not cfg.strategies:
        raise LabelloopError("--strategies is empty.")
    if len(set(cfg.strategies)) != len(cfg.strategies):
        raise LabelloopError("--strategies names a strategy twice.")
    bad = [f for f in cfg.features if f not in FEATURE_KINDS]
    if bad or not cfg.features:
        raise LabelloopError(
            f"unknown features {', '.join(bad) or '(none given)'}; choose from {', '.join(FEATURE_KINDS)}."
        )
    if len(set(cfg.features)) != len(cfg.features):
        raise LabelloopError("--features names a featurizer twice.")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise LabelloopError(f"the label column has one class only ('{classes[0]}'); a classifier needs at least two.")
    for name, v in (
        ("--seed-size", cfg.seed_size),
        ("--batch", cfg.batch),
        ("--budget", cfg.budget),
        ("--repeats", cfg.repeats),
    ):
        if v < 1:
            raise LabelloopError(f"{name} must be at least 1, got {v}.")
    if not 0 < cfg.test_frac < 1:
        raise LabelloopError(f"--test-frac must be between 0 and 1, got {cfg.test_frac}.")
    if not 0 < cfg.target_frac <= 1:
        raise LabelloopError(f"--target must be above 0 and at most 1, got {cfg.target_frac}.")
    if cfg.budget < cfg.seed_size:
        raise LabelloopError(f"--budget ({cfg.budget}) is smaller than --seed-size ({cfg.seed_size}).")
    if cfg.seed_query:
        coldstart.check_seed_query(cfg.seed_query)


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass
class _Data:
    """A labelled file split into pool and test, with the feature blocks every arm shares."""

    texts: list[str]
    pool: np.ndarray
    test: np.ndarray
    y_pool: list
    y_test: list
    classes: list[str]
    n_leaked: int
    T_pool: object
    T_test: object
    E_pool: object = None
    E_test: object = None
    matrices: dict = field(default_factory=dict)

    @property
    def n_pool(self) -> int:
        return len(self.pool)

    @property
    def y_pool_arr(self) -> np.ndarray:
        return np.array(self.y_pool, dtype=object)

    def mats(self, mode: str, w: float):
        """(pool matrix, test matrix) for a featurizer; built once, shared by every arm."""
        key = (mode, round(w, 6))
        if key not in self.matrices:
            self.matrices[key] = (
                combine(self.T_pool, self.E_pool, np.arange(self.n_pool), mode, w),
                combine(self.T_test, self.E_test, np.arange(len(self.test)), mode, w),
            )
        return self.matrices[key]


def run_simulation(
    path: Path, text_col: str, label_col: str, cfg: SimConfig, *, split_col: str | None = None, progress=None
) -> SimReport:
    started = time.perf_counter()
    data = _load(path, text_col, label_col, split_col, cfg, progress)
    full_by, learnable = _learnability(data, cfg)
    full_acc = learnable["accuracy"]
    target = cfg.target_frac * full_acc
    records, choices = _replay(data, cfg, progress)
    curves = pl.DataFrame(records)
    curves = curves.select(["features", "strategy", *[c for c in curves.columns if c not in ("features", "strategy")]])
    out = _summarise(curves, cfg, target, data.n_pool, learnable)
    if data.n_leaked:
        out["notes"].insert(
            0,
            f"removed {data.n_leaked:,} pool rows whose exact text is also in the test split "
            "(leakage) before measuring.",
        )
    return SimReport(
        curves,
        out["summary"],
        full_acc,
        target,
        out["verdict"],
        out["conditions"],
        out["best_strategy"],
        out["saving"],
        data.n_pool,
        len(data.test),
        data.classes,
        time.perf_counter() - started,
        out["notes"],
        comparisons=out["comparisons"],
        learnable=learnable,
        full_by_features=full_by,
        best_features=out["best_features"],
        choices=choices,
        targets=target_table(curves, full_acc, cfg.budget, cfg.targets, cfg.seed),
    )


def _load(path: Path, text_col: str, label_col: str, split_col: str | None, cfg: SimConfig, progress) -> _Data:
    """Read and check the file, hold out the test split, drop leaked pool rows, featurize once."""
    texts, labels, splits = read_labelled(path, text_col, label_col, split_col)
    validate(cfg, labels)
    rng = np.random.default_rng(cfg.seed)
    y_all = np.array(labels, dtype=object)
    pool, test = _split(y_all, splits, cfg.test_frac, rng)
    # A pool text that is also a test text leaks: labelling it is labelling the test item, and the
    # full-pool accuracy (the target) would be inflated. Such pool rows are removed and counted.
    test_texts = {texts[i] for i in test}
    leaked = np.array([texts[i] in test_texts for i in pool], dtype=bool)
    pool = pool[~leaked]
    n_pool = len(pool)
    if n_pool < cfg.seed_size:
        raise LabelloopError(f"the data set has {n_pool} pool rows, fewer than --seed-size {cfg.seed_size}.")
    if cfg.budget > n_pool:
        raise LabelloopError(
            f"--budget {cfg.budget} is larger than the pool ({n_pool} rows after holding out the test split)."
        )
    if progress:
        progress(0.0, "features")
    featurizer = TextFeaturizer("tfidf").fit([texts[i] for i in pool])
    T = featurizer.transform_text(texts)
    E = None
    if any(f != "tfidf" for f in cfg.features):
        from labelloop.core.engine.embed import embed_texts

        E = embed_texts(texts)
    return _Data(
        texts,
        pool,
        test,
        list(y_all[pool]),
        list(y_all[test]),
        sorted(set(labels)),
        int(leaked.sum()),
        T[pool],
        T[test],
        *((E[pool], E[test]) if E is not None else (None, None)),
    )


def _learnability(data: _Data, cfg: SimConfig) -> tuple[dict, dict]:
    """A model on the whole pool per featurizer involved: the accuracy to reach (the best), and whether
    it is measurably above the majority class and chance."""
    modes = sorted({m for f in cfg.features for m in (FEATURE_MODES if f == "auto" else (f,))}, key=FEATURE_MODES.index)
    full_by = {}
    for mode in modes:
        Xp, Xt = data.mats(mode, 1.0)
        full = fit_model(Xp, data.y_pool, data.classes, calibration="none", seed=cfg.seed, C=C_DEFAULT)
        full_by[mode] = evaluate(full, Xt, data.y_test, data.classes)["accuracy"]
    best_mode = max(full_by, key=full_by.get)
    full_acc = full_by[best_mode]
    majority = max(np.mean(np.array(data.y_test, dtype=object) == c) for c in data.classes)
    chance = 1.0 / len(data.classes)
    lo, hi = _wilson(int(round(full_acc * len(data.test))), len(data.test))
    return full_by, {
        "accuracy": full_acc,
        "interval": [lo, hi],
        "majority": float(majority),
        "chance": chance,
        "features": best_mode,
        "holds": bool(lo > max(majority, chance)),
    }


def _replay(data: _Data, cfg: SimConfig, progress) -> tuple[list[dict], list[dict]]:
    """Every repeat x featurizer x strategy from the repeat's seed set (paired): the curves' records
    and the features chosen on each seed set."""
    n_pool, y_pool_arr = data.n_pool, data.y_pool_arr
    keyword_rows = None
    if cfg.seed_query:
        rx = re.compile(cfg.seed_query, re.IGNORECASE)
        keyword_rows = np.array([i for i, idx in enumerate(data.pool) if rx.search(data.texts[idx])], dtype=np.int64)
    records, choices = [], []
    total = cfg.repeats * len(cfg.strategies) * len(cfg.features)
    done = 0
    for r in range(cfg.repeats):
        rep_rng = np.random.default_rng([cfg.seed, r])
        if keyword_rows is not None:
            seed_rows, _ = coldstart.keyword_seed(keyword_rows, n_pool, cfg.seed_size, rep_rng)
        else:
            seed_rows = coldstart.random_seed(n_pool, cfg.seed_size, rep_rng)
        seed_rows = _ensure_two_classes(seed_rows, y_pool_arr, rep_rng)
        for fi, feat in enumerate(cfg.features):
            # features (and C) chosen on this repeat's seed labels, shared by its strategies (paired),
            # then re-decided in each arm as its labels double, as the workstation does
            fseed = int(np.random.default_rng([cfg.seed, r, 99, fi]).integers(1 << 30))

            def choose(rows, feat=feat, fseed=fseed, C=None):
                ch = choose_features(
                    data.T_pool, data.E_pool, rows, y_pool_arr[rows], kind=feat, seed=fseed, choose_c=C is None
                )
                if C is not None:
                    ch["C"] = C
                Xp, Xt = data.mats(ch["mode"], ch["weight"])
                return ch, Xp, Xt

            first = choose(seed_rows)
            choices.append(
                {
                    "repeat": r,
                    "features": feat,
                    "n": len(seed_rows),
                    **{k: first[0][k] for k in ("name", "mode", "weight", "C", "reason")},
                }
            )
            for strategy in cfg.strategies:
                recs = _run_arm(
                    strategy,
                    r,
                    seed_rows,
                    first,
                    choose,
                    data.y_pool,
                    data.y_test,
                    data.classes,
                    cfg,
                    np.random.default_rng([cfg.seed, r, list(STRATEGIES).index(strategy)]),
                )
                for rec in recs:
                    rec["features"] = feat
                records.extend(recs)
                done += 1
                if progress:
                    progress(done / total, f"{feat} {strategy} repeat {r + 1}")
    return records, choices


def _ensure_two_classes(rows: np.ndarray, y: np.ndarray, rng) -> np.ndarray:
    """A seed set of one class cannot train a classifier: add random items until it has two."""
    rows = list(rows)
    present = set(y[rows])
    if len(present) >= 2:
        return np.array(rows, dtype=np.int64)
    others = rng.permutation(np.flatnonzero(~np.isin(y, list(present))))
    return np.array(rows + [int(others[0])], dtype=np.int64)


def quick_metrics(model, X_test, y_idx: np.ndarray, classes: list[str]) -> dict:
    """The test-split numbers a learning curve needs, in numpy (the same definitions as
    ``core.model.evaluate``: accuracy, macro-F1 over the classes present in truth or prediction,
    per-class recall, top-label ECE with 15 bins, calibrated and raw)."""
    from labelloop.core.engine.calibration import reliability, softmax_t

    logits = model.decision(X_test)
    probs = model.calibrate_logits(logits)
    raw = softmax_t(logits, 1.0)
    cols = np.array([classes.index(c) for c in model.classes_])
    pred = cols[probs.argmax(axis=1)]
    k = len(classes)
    tp = np.bincount(y_idx[pred == y_idx], minlength=k).astype(float)
    n_true = np.bincount(y_idx, minlength=k).astype(float)
    n_pred = np.bincount(pred, minlength=k).astype(float)
    present = (n_true > 0) | (n_pred > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(n_pred > 0, tp / n_pred, 0.0)
        rec = np.where(n_true > 0, tp / n_true, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    # test items of a class the model never saw count as errors and are left out of the ECE
    local = {c: i for i, c in enumerate(model.classes_)}
    y_local = np.array([local.get(classes[i], -1) for i in y_idx])
    known = y_local >= 0
    out = {
        "accuracy": float(np.mean(pred == y_idx)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "ece": reliability(probs[known], y_local[known])["ece"],
        "ece_raw": reliability(raw[known], y_local[known])["ece"],
    }
    for i, c in enumerate(classes):
        out[f"recall_{c}"] = float(rec[i])
    return out


def cfg_features_kind(choice: dict) -> str:
    return choice.get("kind", "tfidf")


def _run_arm(strategy, repeat, seed_rows, first, choose, y_pool, y_test, classes, cfg: SimConfig, rng) -> list[dict]:
    """One learning curve: train, measure on the test split, score only the remaining pool, select.
    ``first``: the (choice, pool matrix, test matrix) decided on the seed labels; ``choose(rows)``
    re-decides them when the labels have doubled since."""
    y_arr = np.array(y_pool, dtype=object)
    choice, X_pool, X_test = first
    decided_at = len(seed_rows)
    several = len(candidates_for(cfg_features_kind(first[0]))) > 1
    y_test_idx = np.array([classes.index(v) for v in y_test])
    labelled = list(seed_rows)
    unlabelled_mask = np.ones(len(y_pool), dtype=bool)
    unlabelled_mask[labelled] = False
    out = []
    model = None
    # strategy "auto": its bandit, with the simulated project's test split (pool items held out of
    # this arm's pool) as evidence; simulate's own test split stays unseen
    policy = (
        SimulatedAuto(len(labelled), unlabelled_mask, y_arr, cfg.evidence_size, rng) if strategy == "auto" else None
    )
    while True:
        t = time.perf_counter()
        if several and len(labelled) >= 2 * decided_at:
            # the features are re-decided (C stays the one chosen on the seed labels: re-choosing it
            # too doubled the simulation's time and left the bare-loop comparison without one C)
            new = choose(np.array(labelled, dtype=np.int64), C=choice["C"])
            if (new[0]["mode"], new[0]["weight"]) != (choice["mode"], choice["weight"]):
                model = None  # other features: nothing to warm-start from
            choice, X_pool, X_test = new
            decided_at = len(labelled)
        C = float(choice["C"])
        model = fit_model(
            X_pool[labelled],
            list(y_arr[labelled]),
            classes,
            calibration=cfg.calibration,
            C=C,
            seed=int(rng.integers(1 << 30)),
            held_out="alo",
            warm_from=model,
        )
        if policy is not None:
            policy.retrained(X_pool, labelled, y_arr, classes, C)
        fit_s = time.perf_counter() - t
        m = quick_metrics(model, X_test, y_test_idx, classes)
        row = {
            "strategy": strategy,
            "repeat": repeat,
            "n_labels": len(labelled),
            **m,
            "calibration_skipped": model.info.get("calibration_skipped") or "",
            "C": C,
            "features_used": choice["name"],
            "shares": shares_line(policy.state if policy else None),
        }
        if len(labelled) >= cfg.budget or not unlabelled_mask.any():
            row["compute_seconds"] = fit_s
            row["selected"] = False
            out.append(row)
            break
        t = time.perf_counter()
        cand = np.flatnonzero(unlabelled_mask)
        k = min(cfg.batch, cfg.budget - len(labelled), len(cand))
        if policy is not None:
            chosen = policy.pick(model, X_pool, cand, labelled, k, cfg.audit_share, rng)
        else:
            chosen = _arm_pick(get_strategy(strategy), model, X_pool, cand, labelled, y_arr, classes, k, rng)
        row["compute_seconds"] = fit_s + (time.perf_counter() - t)
        row["selected"] = True
        out.append(row)
        labelled.extend(int(i) for i in chosen)
        unlabelled_mask[chosen] = False
    return out


def _arm_pick(strat, model, X_pool, cand: np.ndarray, labelled: list, y_arr, classes, k: int, rng) -> np.ndarray:
    """The next batch of an arm: the pool rows ``strat`` picks among the candidates, scored as the
    workstation's loop scores (the same strategy object, the same Round)."""
    scores = None
    if strat.uses_scores:
        Xc = X_pool[cand]
        rnd = strat.prepare(
            Round(
                model=model,
                X_lab=X_pool[labelled],
                y_lab=list(y_arr[labelled]),
                N_lab=X_pool[labelled],
                classes=classes,
                rng=rng,
            )
        )
        scores = strat.score(model.uncalibrated_proba(Xc), Xc, Xc, rnd)  # as the loop scores
    sel = select_batch(
        strat,
        len(cand),
        k,
        rng=rng,
        audit_share=0.0,
        scores=scores,
        X_pool=X_pool[cand] if strat.name == "diversity" else None,
    )
    return cand[sel.index]


def labels_to_target(curves: pl.DataFrame, target: float) -> pl.DataFrame:
    """Per arm (features, strategy) and repeat: the first label count whose accuracy reaches the
    target (null if never), with the numbers the comparisons and conditions use."""
    return (
        curves.sort("n_labels")
        .group_by("features", "strategy", "repeat", maintain_order=True)
        .agg(
            pl.col("n_labels").filter(pl.col("accuracy") >= target).first().alias("labels_to_target"),
            pl.col("accuracy").first().alias("seed_accuracy"),
            pl.col("accuracy").last().alias("final_accuracy"),
            pl.col("ece").last().alias("final_ece"),
            pl.col("ece").filter(pl.col("selected")).mean().alias("selecting_ece"),
            pl.col("ece").filter(pl.col("selected")).max().alias("selecting_ece_max"),
            pl.col("ece_raw").filter(pl.col("selected")).mean().alias("selecting_ece_raw"),
            (pl.col("calibration_skipped") != "").sum().alias("calibration_skipped_rounds"),
            pl.col("accuracy").mean().alias("mean_accuracy"),
            pl.col("compute_seconds").filter(pl.col("selected")).mean().alias("compute_per_round"),
            pl.col("compute_seconds").filter(pl.col("selected")).sum().alias("compute_total"),
            pl.col("selected").sum().alias("rounds"),
        )
    )


def paired_interval(
    a: np.ndarray, b: np.ndarray, *, n_boot: int = BOOTSTRAP, seed: int = 0, level: float = 0.95
) -> dict:
    """Mean of the paired differences a - b over repeats, with a percentile bootstrap interval
    (repeats resampled with replacement). ``decided``: the interval excludes zero. ``repeats_needed``:
    about how many repeats would give an interval narrower than the difference, if it is real."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return {
            "mean": mean,
            "low": float("nan"),
            "high": float("nan"),
            "n": n,
            "decided": False,
            "repeats_needed": None,
            "sd": float("nan"),
        }
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    sd = float(d.std(ddof=1))
    decided = bool(lo > 0 or hi < 0)
    needed = None
    if not decided and abs(mean) > 1e-12 and sd > 0:
        needed = int(math.ceil((1.96 * sd / abs(mean)) ** 2))
    return {
        "mean": mean,
        "low": float(lo),
        "high": float(hi),
        "n": n,
        "decided": decided,
        "sd": sd,
        "repeats_needed": needed,
    }


def _compare(per: pl.DataFrame, a: tuple, b: tuple, budget: int, seed: int) -> dict:
    """Paired comparison of arm ``a`` against arm ``b`` (each (features, strategy)) over repeats."""

    def arm(key):
        return per.filter((pl.col("features") == key[0]) & (pl.col("strategy") == key[1])).sort("repeat")

    A, B = arm(a), arm(b)
    common = sorted(set(A["repeat"]) & set(B["repeat"]))
    A, B = A.filter(pl.col("repeat").is_in(common)), B.filter(pl.col("repeat").is_in(common))
    la = A["labels_to_target"].fill_null(budget).to_numpy().astype(float)
    lb = B["labels_to_target"].fill_null(budget).to_numpy().astype(float)
    return {
        "a": a,
        "b": b,
        # labels: b - a, so that a positive number means a needs fewer labels
        "labels_saved": paired_interval(lb, la, seed=seed),
        "labels_a": float(la.mean()),
        "labels_b": float(lb.mean()),
        "reached_a": int(A["labels_to_target"].is_not_null().sum()),
        "reached_b": int(B["labels_to_target"].is_not_null().sum()),
        "auc": paired_interval(A["mean_accuracy"].to_numpy(), B["mean_accuracy"].to_numpy(), seed=seed + 1),
        "final": paired_interval(A["final_accuracy"].to_numpy(), B["final_accuracy"].to_numpy(), seed=seed + 2),
    }


def _summary_table(per: pl.DataFrame, cfg: SimConfig) -> pl.DataFrame:
    """Per arm (features, strategy): labels to target, accuracy, calibration, compute and money."""
    summary = per.group_by("features", "strategy", maintain_order=True).agg(
        pl.col("labels_to_target").mean().alias("labels_to_target_mean"),
        pl.col("labels_to_target").std().alias("labels_to_target_std"),
        pl.col("labels_to_target").is_not_null().sum().alias("reached"),
        pl.len().alias("repeats"),
        pl.col("labels_to_target").fill_null(cfg.budget).mean().alias("labels_needed"),
        pl.col("final_accuracy").mean().alias("final_accuracy_mean"),
        pl.col("final_accuracy").std().alias("final_accuracy_std"),
        pl.col("final_ece").mean().alias("final_ece_mean"),
        pl.col("selecting_ece").mean().alias("selecting_ece_mean"),
        pl.col("selecting_ece_max").max().alias("selecting_ece_max"),
        pl.col("selecting_ece_raw").mean().alias("selecting_ece_raw_mean"),
        pl.col("calibration_skipped_rounds").sum().alias("calibration_skipped_rounds"),
        pl.col("rounds").sum().alias("rounds_total"),
        pl.col("mean_accuracy").mean().alias("area_under_curve"),
        pl.col("compute_per_round").mean().alias("compute_per_round_s"),
        pl.col("compute_total").mean().alias("compute_total_s"),
    )
    return summary.with_columns(
        (
            pl.col("labels_needed") * cfg.cost_per_label + pl.col("compute_total_s") * cfg.compute_price_per_hour / 3600
        ).alias("money_to_target")
    )


def _summarise(curves: pl.DataFrame, cfg: SimConfig, target: float, n_pool: int, learnable: dict) -> dict:
    per = labels_to_target(curves, target)
    summary = _summary_table(per, cfg)
    notes: list[str] = []
    comparisons: list[dict] = []
    al = [s for s in cfg.strategies if s != "random"]
    rows = {(r["features"], r["strategy"]): r for r in summary.iter_rows(named=True)}
    # every AL strategy against random under the same features; every featurizer against the first
    if "random" in cfg.strategies:
        for f in cfg.features:
            for st in al:
                comparisons.append(_compare(per, (f, st), (f, "random"), cfg.budget, cfg.seed))
    for f in cfg.features[1:]:
        for st in cfg.strategies:
            comparisons.append(_compare(per, (f, st), (cfg.features[0], st), cfg.budget, cfg.seed))

    # the seed set alone
    seed_hits = per.filter(pl.col("seed_accuracy") >= target).select("features", "repeat").unique()
    seed_repeats = seed_hits["repeat"].n_unique() if seed_hits.height else 0
    if seed_repeats:
        notes.append(
            f"the seed set alone ({cfg.seed_size} labels) already reached the target in {seed_repeats} of "
            f"{cfg.repeats} repeats: the target is too easy to tell strategies apart there "
            "(raise --target or lower --seed-size)."
        )
    skipped = int(summary["calibration_skipped_rounds"].sum())
    if skipped:
        reason = curves.filter(pl.col("calibration_skipped") != "")["calibration_skipped"][0]
        notes.append(
            f"calibration was skipped in {skipped} of {curves.height} rounds ({reason}); those rounds' "
            "probabilities are uncalibrated."
        )

    # the best arm: fewest labels needed among AL arms (then the best curve)
    best_arm = None
    if al:
        best_arm = min(
            ((f, st) for f in cfg.features for st in al),
            key=lambda k: (rows[k]["labels_needed"], -rows[k]["area_under_curve"]),
        )
    best_features, best = best_arm if best_arm else (cfg.features[0], None)
    # is the best AL arm measurably better than the other AL strategies under its features?
    for st in al:
        if best_arm and st != best:
            comparisons.append(_compare(per, best_arm, (best_features, st), cfg.budget, cfg.seed))
    main = next(
        (c for c in comparisons if best_arm and c["a"] == best_arm and c["b"] == (best_features, "random")), None
    )
    conditions = _conditions(rows[best_arm] if best_arm else None, main, cfg, n_pool, notes)
    verdict, saving = _verdict(learnable, best_arm, main, seed_repeats, cfg, conditions)
    return {
        "summary": summary,
        "best_strategy": best,
        "saving": saving,
        "conditions": conditions,
        "verdict": verdict,
        "notes": notes,
        "comparisons": comparisons,
        "best_features": best_features,
    }


def _conditions(b: dict | None, main: dict | None, cfg: SimConfig, n_pool: int, notes: list[str]) -> dict:
    """The three conditions for AL to pay, judged on the best AL arm ``b`` (its summary row) and its
    comparison with random (``main``): calibrated selecting models, annotation cost above the
    overhead, a pool at least POOL_RATIO times the labels needed."""
    conditions: dict = {}
    if b is None:
        return conditions
    ece = b["selecting_ece_mean"]
    raw = b["selecting_ece_raw_mean"]
    conditions["calibrated"] = {
        "holds": bool(ece is not None and ece <= ECE_LIMIT),
        "ece": ece,
        "ece_max": b["selecting_ece_max"],
        "ece_raw": raw,
        "final_ece": b["final_ece_mean"],
        "limit": ECE_LIMIT,
    }
    if ece is not None and raw is not None and raw < ece:
        notes.append(
            f"calibration made the selecting models' ECE worse ({raw:.3f} raw, {ece:.3f} calibrated): "
            'use the raw probabilities ([strategy] calibration = "none").'
        )
    if main is not None:
        saved_labels = main["labels_saved"]["mean"]
        hourly = cfg.cost_per_label / max(cfg.seconds_per_label, 1e-9) * 3600
        compute_s = b["compute_total_s"] or 0.0
        rounds_n = (b["rounds_total"] or 0) / max(b["repeats"], 1)
        waiting_money = compute_s * hourly / 3600  # annotators idle while each retrain runs
        compute_money = compute_s * cfg.compute_price_per_hour / 3600
        overhead = compute_money + waiting_money + cfg.engineering_cost
        saved_money = saved_labels * cfg.cost_per_label
        conditions["annotation_dominates"] = {
            "holds": bool(saved_money > overhead),
            "saved_money": saved_money,
            "overhead": overhead,
            "compute_money": compute_money,
            "waiting_money": waiting_money,
            "engineering": cfg.engineering_cost,
            "rounds": rounds_n,
            "compute_per_round_s": b["compute_per_round_s"],
        }
    needed = b["labels_needed"]
    conditions["pool_large_enough"] = {
        "holds": bool(n_pool >= POOL_RATIO * needed),
        "pool": n_pool,
        "labels_needed": needed,
        "ratio": n_pool / needed if needed else None,
    }
    return conditions


def _verdict(
    learnable: dict, best_arm, main: dict | None, seed_repeats: int, cfg: SimConfig, conditions: dict
) -> tuple[str, float | None]:
    """The verdict line, in order: learnability, a baseline to compare with, the seed set alone,
    then the paired interval of labels saved by the best AL arm against random; and the share saved."""
    saving = None
    best_features = best_arm[0] if best_arm else cfg.features[0]
    if not learnable["holds"]:
        verdict = (
            f"nothing to learn: a model trained on the whole pool reaches {learnable['accuracy']:.3f} "
            f"[{learnable['interval'][0]:.3f}, {learnable['interval'][1]:.3f}], not above the majority-class "
            f"rate {learnable['majority']:.3f} (chance {learnable['chance']:.3f}); check the labels before "
            "choosing a strategy"
        )
    elif best_arm is None:
        verdict = "use random sampling (no active-learning strategy was simulated)"
    elif main is None:
        verdict = "unknown: no random baseline (add random to --strategies)"
    elif seed_repeats * 2 > cfg.repeats:
        verdict = (
            f"inconclusive: the seed set alone reached the target in {seed_repeats} of {cfg.repeats} repeats; "
            "raise --target"
        )
    else:
        ls = main["labels_saved"]
        auc = main["auc"]
        st = best_arm[1]
        feat_txt = f" with {best_features} features" if len(cfg.features) > 1 else ""
        if main["reached_a"] == 0 and main["reached_b"] == 0:
            verdict = (
                f"inconclusive: neither {st} nor random reached the target within {cfg.budget} labels "
                f"(raise --budget); area under the curve {st} - random = {_fmt_iv(auc, 3)}"
            )
        elif ls["decided"] and ls["mean"] > 0:
            saving = ls["mean"] / main["labels_b"] if main["labels_b"] else None
            failed = [k for k, v in conditions.items() if not v["holds"]]
            verdict = "AL pays off" if (saving or 0) >= PAYS_OFF_SAVING and not failed else "marginal"
            verdict += (
                f": {st}{feat_txt} needs {ls['mean']:.0f} fewer labels than random "
                f"[{ls['low']:.0f}, {ls['high']:.0f}] ({saving:.0%} saved)"
            )
            if failed:
                verdict += " (fails: " + ", ".join(failed) + ")"
        elif ls["decided"] and ls["mean"] < 0:
            saving = ls["mean"] / main["labels_b"] if main["labels_b"] else None
            verdict = (
                f"use random sampling: random needs {-ls['mean']:.0f} fewer labels than {st}{feat_txt} "
                f"[{-ls['high']:.0f}, {-ls['low']:.0f}]"
            )
        else:
            verdict = (
                f"no measurable difference between {st}{feat_txt} and random in labels to target: "
                f"{_fmt_iv(ls, 0)} labels saved over {ls['n']} repeats"
            )
            if ls["repeats_needed"]:
                verdict += (
                    f"; about {ls['repeats_needed']} repeats would resolve a difference of this size if it is real"
                )
            elif ls["n"] >= 2:
                verdict += "; the repeats agree on no difference"
            verdict += "; use random sampling unless it is measured otherwise"
    return verdict, saving


def _fmt_iv(iv: dict, digits: int) -> str:
    if iv["n"] < 2 or not np.isfinite(iv["low"]):
        return f"{iv['mean']:+.{digits}f} (one repeat: no interval)"
    return f"{iv['mean']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"


def write_outputs(report: SimReport, curves_path: Path | None, chart_path: Path | None) -> None:
    if curves_path is not None:
        curves_path = Path(curves_path)
        if curves_path.suffix.lower() in (".parquet", ".pq"):
            atomic_write(curves_path, lambda f: report.curves.write_parquet(f))
        else:
            atomic_write(curves_path, lambda f: report.curves.write_csv(f))
    if chart_path is not None:
        plot_curves(report, Path(chart_path))


def plot_curves(report: SimReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    agg = (
        report.curves.group_by("features", "strategy", "n_labels")
        .agg(pl.col("accuracy").mean().alias("m"), pl.col("accuracy").std().fill_null(0).alias("s"))
        .sort("features", "strategy", "n_labels")
    )
    several = agg["features"].n_unique() > 1
    markers = "osD^v<>phx*"
    for i, ((feat, strategy), d) in enumerate(agg.group_by("features", "strategy", maintain_order=True)):
        x, m, s = d["n_labels"].to_numpy(), d["m"].to_numpy(), d["s"].to_numpy()
        name = f"{strategy} / {feat}" if several else strategy
        ax.plot(
            x, m, label=name, lw=1.5, marker=markers[i % len(markers)], ms=4, ls="--" if strategy == "random" else "-"
        )
        ax.fill_between(x, m - s, m + s, alpha=0.12)
    ax.axhline(report.target, color="grey", lw=1, ls=":", label=f"target {report.target:.3f}")
    ax.set_xlabel("labels (seed set included)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Learning curves (mean ± sd over repeats)\n{report.verdict[:110]}", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight"))
    finally:
        plt.close(fig)


def format_report(report: SimReport, cfg: SimConfig) -> str:
    """The simulation's report as ``labelloop simulate`` prints it.

    Long because the report is written top to bottom in the order a lead reads it: data, learnability,
    arms, comparisons with their intervals, conditions, verdict.
    """
    L = report.learnable
    lines = [
        f"pool {report.pool_size:,} / test {report.test_size:,} items, {len(report.classes)} classes; "
        f"{cfg.repeats} repeats; {report.seconds:.1f} s",
        "full-pool accuracy: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report.full_by_features.items())
        + f"; target {report.target:.3f} ({cfg.target_frac:.0%} of the best)",
        f"learnable: {'yes' if L.get('holds') else 'NO'}: {L.get('accuracy', 0):.3f} "
        f"[{L.get('interval', [0, 0])[0]:.3f}, {L.get('interval', [0, 0])[1]:.3f}] against the majority-class "
        f"rate {L.get('majority', 0):.3f} and chance {L.get('chance', 0):.3f}",
    ]
    used = {}
    for c in report.choices:
        used.setdefault(c["features"], []).append(f"{c['name']} C={c['C']:g}")
    for f, names in used.items():
        counts = {n: names.count(n) for n in dict.fromkeys(names)}
        last = (
            report.curves.filter(pl.col("features") == f)
            .sort("n_labels")
            .group_by("strategy", "repeat")
            .agg(pl.col("features_used").last())["features_used"]
            .to_list()
        )
        final = {n: last.count(n) for n in dict.fromkeys(last)}
        lines.append(
            f"features {f}: chosen on the seed labels per repeat: "
            + ", ".join(f"{n} ({k}x)" for n, k in counts.items())
            + "; re-decided as labels double, used in the last round: "
            + ", ".join(f"{n} ({k} arms)" for n, k in final.items())
        )
    lines.append("")
    lines.append(
        f"{'features':<13}{'strategy':<18}{'labels to target':>18}{'reached':>9}{'final acc':>16}"
        f"{'ECE sel.':>9}{'curve mean':>11}{'compute/round':>15}"
    )
    for r in report.summary.iter_rows(named=True):
        ltt = (
            "never"
            if r["labels_to_target_mean"] is None
            else (f"{r['labels_to_target_mean']:.0f} ± {r['labels_to_target_std'] or 0:.0f}")
        )
        ece = r["selecting_ece_mean"] if r["selecting_ece_mean"] is not None else r["final_ece_mean"]
        lines.append(
            f"{r['features']:<13}{r['strategy']:<18}{ltt:>18}{r['reached']:>5}/{r['repeats']:<3}"
            f"{r['final_accuracy_mean']:>10.3f} ± {r['final_accuracy_std'] or 0:.3f}"
            f"{ece:>9.3f}{r['area_under_curve']:>11.3f}"
            f"{(r['compute_per_round_s'] or 0):>13.2f} s"
        )
    if report.comparisons:
        lines.append("")
        lines.append(
            f"Paired differences over repeats (mean [95% bootstrap interval]); labels saved > 0: the first "
            f"arm needs fewer labels (repeats that never reach the target count at {cfg.budget}):"
        )
        for c in report.comparisons:
            a = f"{c['a'][1]}/{c['a'][0]}"
            b = f"{c['b'][1]}/{c['b'][0]}"
            ls = c["labels_saved"]
            word = (
                "no measurable difference"
                if not ls["decided"]
                else ("fewer labels" if ls["mean"] > 0 else "more labels")
            )
            lines.append(
                f"  {a} vs {b}: labels saved {_fmt_iv(ls, 0)} ({word}); "
                f"curve mean {_fmt_iv(c['auc'], 3)}; final accuracy {_fmt_iv(c['final'], 3)}"
            )
    lines.append("")
    if report.saving is not None and report.best_strategy:
        lines.append(
            f"Best active-learning arm: {report.best_strategy} with {report.best_features} features; "
            f"{report.saving:+.0%} of the labels random sampling needs (seed set counted)."
        )
    for name, c in report.conditions.items():
        if name == "calibrated":
            detail = (
                f"ECE of the models that selected {c['ece']:.3f} on average (worst {c['ece_max']:.3f}; "
                f"raw {c['ece_raw']:.3f}; final model {c['final_ece']:.3f}; limit {c['limit']})"
            )
        elif name == "annotation_dominates":
            detail = (
                f"labels saved are worth {c['saved_money']:.2f} against an overhead of {c['overhead']:.2f} "
                f"(compute {c['compute_money']:.2f}, annotators waiting for {c['rounds']:.0f} retrains "
                f"{c['waiting_money']:.2f}, engineering {c['engineering']:.2f})"
            )
        else:
            detail = (
                f"pool {c['pool']:,} vs {c['labels_needed']:.0f} labels needed "
                f"({c['ratio']:.1f}x; wants >= {POOL_RATIO:.0f}x)"
            )
        lines.append(f"  [{'holds' if c['holds'] else 'FAILS'}] {name}: {detail}")
    for n in report.notes:
        lines.append(f"  note: {n}")
    lines.append(f"Verdict ({cfg.repeats} repeats): {report.verdict}")
    if report.targets:
        lines.append("")
        lines.extend(format_targets(report.targets, cfg.budget))
    return "\n".join(lines)


def format_targets(table: list[dict], budget: int) -> list[str]:
    """Labels to each target per arm with intervals, a verdict per target and where AL pays."""
    out = [f"Labels to each target (mean over repeats [95% interval]; never reached counts at {budget}):"]
    for r in table:
        iv = f"[{r['low']:.0f}, {r['high']:.0f}]" if np.isfinite(r["low"]) else ""
        out.append(
            f"  {r['target'] * 100:g}%  {r['features']:<12} {r['strategy']:<10} {r['labels']:6.0f} {iv:<12} "
            f"reached {r['reached']}/{r['repeats']}"
        )
    out.extend("  " + line for line in verdict_lines(table, budget))
    out.append(f"Where AL pays: {pays_summary(table)}")
    return out
