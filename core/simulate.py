"""``labelloop simulate``: replay the loop on a fully labelled file, labels as the oracle.

It answers, before money is spent, whether active learning pays off on this kind
of data: learning curves per strategy (mean and spread over repeats), labels
needed to reach a target (default 95% of the accuracy of a model trained on the
whole pool) against random sampling with the seed set counted, money cost
(labels and measured compute), and a verdict that names which of the three
conditions holds: calibrated uncertainty (ECE <= 0.10), annotation cost
dominating the pipeline's overhead, and a pool at least 10x the labels needed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from labelloop.core import coldstart
from labelloop.core.errors import InputFileError, LabelloopError
from labelloop.core.safeio import atomic_write
from labelloop.core.features import TextFeaturizer
from labelloop.core.model import evaluate, fit_model
from labelloop.core.strategies import STRATEGY_NAMES, UNCERTAINTY, bald, cal_scores, select_batch, vote_entropy

ECE_LIMIT = 0.10
POOL_RATIO = 10.0
OVERHEAD_LIMIT = 0.10     # compute per round at most 10% of the annotation time of a batch
PAYS_OFF_SAVING = 0.20
MARGINAL_SAVING = 0.05


@dataclass
class SimConfig:
    strategies: list[str]
    seed_size: int = 50
    batch: int = 50
    budget: int = 500
    repeats: int = 3
    test_frac: float = 0.2
    seed_query: str | None = None
    target_frac: float = 0.95
    calibration: str = "temperature"
    cost_per_label: float = 0.10
    seconds_per_label: float = 15.0
    compute_price_per_hour: float = 0.50
    seed: int = 0


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


def read_labelled(path: Path, text_col: str, label_col: str, split_col: str | None = None):
    """(texts, labels, splits or None) from CSV/TSV/JSONL/Parquet, with clear errors."""
    import duckdb
    from labelloop.core.store.imports import detect_format
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist.")
    fmt = detect_format(path)
    p = str(path).replace("'", "''")
    reader = {"csv": f"read_csv('{p}', header=true, all_varchar=true, delim=',', quote='\"', escape='\"')",
              "tsv": f"read_csv('{p}', header=true, all_varchar=true, delim='\\t', quote='\"', escape='\"')",
              "jsonl": f"read_json('{p}', format='newline_delimited')",
              "parquet": f"read_parquet('{p}')"}[fmt]
    con = duckdb.connect()
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
        for flag, c in (("--text-col", text_col), ("--label-col", label_col), ("--split-col", split_col)):
            if c is not None and c not in cols:
                raise LabelloopError(f"{path}: column '{c}' (asked for by {flag}) is missing; the file has: {', '.join(cols)}.")
        split_sql = f', CAST("{split_col}" AS VARCHAR)' if split_col else ""
        rows = con.execute(f'SELECT CAST("{text_col}" AS VARCHAR), CAST("{label_col}" AS VARCHAR){split_sql} FROM {reader}').fetchall()
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
    unknown = [s for s in cfg.strategies if s not in STRATEGY_NAMES]
    if unknown:
        raise LabelloopError(f"unknown strategy name(s) {', '.join(unknown)}; choose from {', '.join(STRATEGY_NAMES)}.")
    if not cfg.strategies:
        raise LabelloopError("--strategies is empty.")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise LabelloopError(f"the label column has one class only ('{classes[0]}'); a classifier needs at least two.")
    for name, v in (("--seed-size", cfg.seed_size), ("--batch", cfg.batch), ("--budget", cfg.budget), ("--repeats", cfg.repeats)):
        if v < 1:
            raise LabelloopError(f"{name} must be at least 1, got {v}.")
    if not 0 < cfg.test_frac < 1:
        raise LabelloopError(f"--test-frac must be between 0 and 1, got {cfg.test_frac}.")
    if cfg.budget < cfg.seed_size:
        raise LabelloopError(f"--budget ({cfg.budget}) is smaller than --seed-size ({cfg.seed_size}).")
    if cfg.seed_query:
        coldstart.check_seed_query(cfg.seed_query)


def run_simulation(path: Path, text_col: str, label_col: str, cfg: SimConfig, *, split_col: str | None = None,
                   progress=None) -> SimReport:
    started = time.perf_counter()
    texts, labels, splits = read_labelled(path, text_col, label_col, split_col)
    validate(cfg, labels)
    rng = np.random.default_rng(cfg.seed)
    y_all = np.array(labels, dtype=object)
    pool, test = _split(y_all, splits, cfg.test_frac, rng)
    # A pool text that is also a test text leaks: labelling it is labelling the test item, and the
    # full-pool accuracy (the target) would be inflated. Such pool rows are removed and counted.
    test_texts = {texts[i] for i in test}
    leaked = np.array([texts[i] in test_texts for i in pool], dtype=bool)
    n_leaked = int(leaked.sum())
    pool = pool[~leaked]
    classes = sorted(set(labels))
    n_pool = len(pool)
    if n_pool < cfg.seed_size:
        raise LabelloopError(f"the data set has {n_pool} pool rows, fewer than --seed-size {cfg.seed_size}.")
    if cfg.budget > n_pool:
        raise LabelloopError(f"--budget {cfg.budget} is larger than the pool ({n_pool} rows after holding out the test split).")
    featurizer = TextFeaturizer("tfidf").fit([texts[i] for i in pool])
    X = featurizer.transform(texts)
    X_pool, X_test = X[pool], X[test]
    y_pool, y_test = list(y_all[pool]), list(y_all[test])
    full = fit_model(X_pool, y_pool, classes, calibration=cfg.calibration, seed=cfg.seed)
    full_acc = evaluate(full, X_test, y_test, classes)["accuracy"]
    target = cfg.target_frac * full_acc
    keyword_rows = None
    if cfg.seed_query:
        rx = re.compile(cfg.seed_query, re.IGNORECASE)
        keyword_rows = np.array([i for i, idx in enumerate(pool) if rx.search(texts[idx])], dtype=np.int64)

    records = []
    total = cfg.repeats * len(cfg.strategies)
    done = 0
    for r in range(cfg.repeats):
        rep_rng = np.random.default_rng([cfg.seed, r])
        if keyword_rows is not None:
            seed_rows, _ = coldstart.keyword_seed(keyword_rows, n_pool, cfg.seed_size, rep_rng)
        else:
            seed_rows = coldstart.random_seed(n_pool, cfg.seed_size, rep_rng)
        seed_rows = _ensure_two_classes(seed_rows, np.array(y_pool, dtype=object), rep_rng)
        for strategy in cfg.strategies:
            records.extend(_run_arm(strategy, r, seed_rows, X_pool, y_pool, X_test, y_test, classes, cfg,
                                    np.random.default_rng([cfg.seed, r, STRATEGY_NAMES.index(strategy)])))
            done += 1
            if progress:
                progress(done / total, f"{strategy} repeat {r + 1}")
    curves = pl.DataFrame(records)
    summary, best, saving, conditions, verdict, notes = _summarise(curves, cfg, target, n_pool)
    if n_leaked:
        notes.insert(0, f"removed {n_leaked:,} pool rows whose exact text is also in the test split (leakage) "
                        "before measuring.")
    return SimReport(curves, summary, full_acc, target, verdict, conditions, best, saving, n_pool, len(test),
                     classes, time.perf_counter() - started, notes)


def _ensure_two_classes(rows: np.ndarray, y: np.ndarray, rng) -> np.ndarray:
    """A seed set of one class cannot train a classifier: add random items until it has two."""
    rows = list(rows)
    present = set(y[rows])
    if len(present) >= 2:
        return np.array(rows, dtype=np.int64)
    others = rng.permutation(np.flatnonzero(~np.isin(y, list(present))))
    return np.array(rows + [int(others[0])], dtype=np.int64)


def _run_arm(strategy, repeat, seed_rows, X_pool, y_pool, X_test, y_test, classes, cfg: SimConfig, rng) -> list[dict]:
    y_arr = np.array(y_pool, dtype=object)
    labelled = list(seed_rows)
    unlabelled_mask = np.ones(len(y_pool), dtype=bool)
    unlabelled_mask[labelled] = False
    out = []
    while True:
        t = time.perf_counter()
        model = fit_model(X_pool[labelled], list(y_arr[labelled]), classes, calibration=cfg.calibration,
                          seed=int(rng.integers(1 << 30)))
        fit_s = time.perf_counter() - t
        m = evaluate(model, X_test, y_test, classes)
        row = {"strategy": strategy, "repeat": repeat, "n_labels": len(labelled), "accuracy": m["accuracy"],
               "macro_f1": m["macro_f1"], "ece": m["ece"]}
        for c in classes:
            row[f"recall_{c}"] = m["per_class"].get(c, {}).get("recall", 0.0)
        if len(labelled) >= cfg.budget or not unlabelled_mask.any():
            row["compute_seconds"] = fit_s
            out.append(row)
            break
        t = time.perf_counter()
        cand = np.flatnonzero(unlabelled_mask)
        k = min(cfg.batch, cfg.budget - len(labelled), len(cand))
        scores = None
        if strategy != "random":
            Xc = X_pool[cand]
            p = model.predict_proba(Xc)
            base = "margin" if strategy in ("diversity", "power") else strategy
            if base in UNCERTAINTY:
                scores = UNCERTAINTY[base](p)
            elif base in ("bald", "qbc"):
                from labelloop.core.loop import fit_committee
                committee = fit_committee(X_pool[labelled], list(y_arr[labelled]), classes, model, rng)
                stack = np.stack([c.predict_proba(Xc) for c in committee])
                scores = bald(stack) if base == "bald" else vote_entropy(stack)
            elif base == "cal":
                X_lab = X_pool[labelled]
                scores = cal_scores(Xc, p, X_lab, model.predict_proba(X_lab))
        sel = select_batch(strategy, len(cand), k, rng=rng, audit_share=0.0, scores=scores,
                           X_pool=X_pool[cand] if strategy == "diversity" else None)
        chosen = cand[sel.index]
        row["compute_seconds"] = fit_s + (time.perf_counter() - t)
        out.append(row)
        labelled.extend(int(i) for i in chosen)
        unlabelled_mask[chosen] = False
    return out


def labels_to_target(curves: pl.DataFrame, target: float) -> pl.DataFrame:
    """Per strategy and repeat: the first label count whose accuracy reaches the target (null if never)."""
    return (curves.sort("n_labels")
            .group_by("strategy", "repeat", maintain_order=True)
            .agg(pl.col("n_labels").filter(pl.col("accuracy") >= target).first().alias("labels_to_target"),
                 pl.col("accuracy").last().alias("final_accuracy"),
                 pl.col("ece").last().alias("final_ece"),
                 pl.col("accuracy").mean().alias("mean_accuracy"),
                 pl.col("compute_seconds").mean().alias("compute_per_round"),
                 pl.col("compute_seconds").sum().alias("compute_total")))


def _summarise(curves: pl.DataFrame, cfg: SimConfig, target: float, n_pool: int):
    per = labels_to_target(curves, target)
    summary = (per.group_by("strategy", maintain_order=True)
               .agg(pl.col("labels_to_target").mean().alias("labels_to_target_mean"),
                    pl.col("labels_to_target").std().alias("labels_to_target_std"),
                    pl.col("labels_to_target").is_not_null().sum().alias("reached"),
                    pl.len().alias("repeats"),
                    pl.col("final_accuracy").mean().alias("final_accuracy_mean"),
                    pl.col("final_accuracy").std().alias("final_accuracy_std"),
                    pl.col("final_ece").mean().alias("final_ece_mean"),
                    pl.col("mean_accuracy").mean().alias("area_under_curve"),
                    pl.col("compute_per_round").mean().alias("compute_per_round_s"),
                    pl.col("compute_total").mean().alias("compute_total_s")))
    # Repeats that never reach the target count at the budget: a lower bound on what they would need.
    eff = per.with_columns(pl.col("labels_to_target").fill_null(cfg.budget).alias("eff"))
    eff_mean = dict(eff.group_by("strategy").agg(pl.col("eff").mean()).iter_rows())
    summary = summary.with_columns(
        pl.col("strategy").replace_strict(eff_mean, default=None).alias("labels_needed"),
    ).with_columns(
        (pl.col("labels_needed") * cfg.cost_per_label + pl.col("compute_total_s") * cfg.compute_price_per_hour / 3600)
        .alias("money_to_target"))
    notes = []
    al = [s for s in cfg.strategies if s != "random"]
    best = min(al, key=lambda s: eff_mean[s]) if al else None
    saving = None
    if best and "random" in eff_mean:
        saving = 1.0 - eff_mean[best] / eff_mean["random"]
        if summary.filter(pl.col("strategy") == "random")["reached"][0] < cfg.repeats:
            notes.append("random did not reach the target within the budget in every repeat; its labels-to-target "
                         "is counted at the budget, so the saving is a lower bound.")
    elif best:
        notes.append("no random arm was run: add random to --strategies to measure the saving.")
    b = summary.filter(pl.col("strategy") == best).row(0, named=True) if best else None
    conditions = {}
    if b:
        ece = b["final_ece_mean"]
        conditions["calibrated"] = {"holds": bool(ece <= ECE_LIMIT), "ece": ece, "limit": ECE_LIMIT}
        annotation_s = cfg.batch * cfg.seconds_per_label
        overhead = b["compute_per_round_s"]
        conditions["annotation_dominates"] = {"holds": bool(overhead <= OVERHEAD_LIMIT * annotation_s),
                                              "compute_per_round_s": overhead, "annotation_per_batch_s": annotation_s}
        needed = b["labels_needed"]
        conditions["pool_large_enough"] = {"holds": bool(n_pool >= POOL_RATIO * needed), "pool": n_pool,
                                           "labels_needed": needed, "ratio": n_pool / needed if needed else None}
    reached = dict(summary.select("strategy", "reached").iter_rows())
    if best is None:
        verdict = "use random sampling (no active-learning strategy was simulated)"
    elif saving is None:
        verdict = "unknown: no random baseline"
    elif reached.get(best, 0) == 0 and reached.get("random", 0) == 0:
        auc = dict(summary.select("strategy", "area_under_curve").iter_rows())
        saving = None
        verdict = (f"inconclusive: no strategy reached the target within {cfg.budget} labels (raise --budget); "
                   f"mean accuracy over the curve {best} {auc[best]:.3f} vs random {auc['random']:.3f}")
    elif reached.get("random", 0) == 0 and saving < MARGINAL_SAVING:
        # random was counted at the budget, so the saving is only a lower bound: too small to judge
        verdict = (f"inconclusive: {best} reached the target in {reached.get(best, 0)} of {cfg.repeats} repeats and "
                   f"random in none within {cfg.budget} labels (raise --budget)")
    else:
        failed = [k for k, v in conditions.items() if not v["holds"]]
        if saving < MARGINAL_SAVING:
            verdict = "use random sampling"
        elif saving >= PAYS_OFF_SAVING and not failed:
            verdict = "AL pays off"
        else:
            verdict = "marginal"
        if failed:
            verdict += " (fails: " + ", ".join(failed) + ")"
    return summary, best, saving, conditions, verdict, notes


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
    agg = (report.curves.group_by("strategy", "n_labels").agg(pl.col("accuracy").mean().alias("m"),
                                                             pl.col("accuracy").std().fill_null(0).alias("s"))
           .sort("strategy", "n_labels"))
    for strategy in agg["strategy"].unique(maintain_order=True):
        d = agg.filter(pl.col("strategy") == strategy)
        x, m, s = d["n_labels"].to_numpy(), d["m"].to_numpy(), d["s"].to_numpy()
        ax.plot(x, m, label=strategy, lw=2 if strategy != "random" else 1.5, ls="--" if strategy == "random" else "-")
        ax.fill_between(x, m - s, m + s, alpha=0.15)
    ax.axhline(report.target, color="grey", lw=1, ls=":", label=f"target {report.target:.3f}")
    ax.set_xlabel("labels (seed set included)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Learning curves — verdict: {report.verdict}", fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def format_report(report: SimReport, cfg: SimConfig) -> str:
    lines = [f"pool {report.pool_size:,} / test {report.test_size:,} items, {len(report.classes)} classes; "
             f"full-pool accuracy {report.full_accuracy:.3f}; target {report.target:.3f} "
             f"({cfg.target_frac:.0%} of it); {cfg.repeats} repeats; {report.seconds:.1f} s", ""]
    lines.append(f"{'strategy':<18}{'labels to target':>20}{'reached':>9}{'final acc':>16}{'final ECE':>10}"
                 f"{'curve mean':>11}{'compute/round':>15}{'cost':>10}")
    for r in report.summary.iter_rows(named=True):
        ltt = "never" if r["labels_to_target_mean"] is None else (
            f"{r['labels_to_target_mean']:.0f} ± {r['labels_to_target_std'] or 0:.0f}")
        lines.append(f"{r['strategy']:<18}{ltt:>20}{r['reached']:>5}/{r['repeats']:<3}"
                     f"{r['final_accuracy_mean']:>10.3f} ± {r['final_accuracy_std'] or 0:.3f}"
                     f"{r['final_ece_mean']:>10.3f}{r['area_under_curve']:>11.3f}"
                     f"{r['compute_per_round_s']:>13.2f} s{r['money_to_target']:>10.2f}")
    lines.append("")
    if report.saving is not None and report.best_strategy:
        lines.append(f"Best strategy: {report.best_strategy}; saves {report.saving:.0%} of the labels random sampling "
                     "needs to reach the target (seed set counted).")
    for name, c in report.conditions.items():
        detail = {"calibrated": lambda c: f"ECE after calibration {c['ece']:.3f} (limit {c['limit']})",
                  "annotation_dominates": lambda c: f"compute {c['compute_per_round_s']:.2f} s per round vs "
                                                    f"{c['annotation_per_batch_s']:.0f} s of annotation per batch",
                  "pool_large_enough": lambda c: f"pool {c['pool']:,} vs {c['labels_needed']:.0f} labels needed "
                                                 f"({c['ratio']:.1f}x; wants >= {POOL_RATIO:.0f}x)"}[name](c)
        lines.append(f"  [{'holds' if c['holds'] else 'FAILS'}] {name}: {detail}")
    for n in report.notes:
        lines.append(f"  note: {n}")
    lines.append(f"Verdict: {report.verdict}")
    return "\n".join(lines)
