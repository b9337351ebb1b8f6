"""`labelloop simulate` against a bare scikit-learn loop doing the same rounds (issue: features and
honest verdicts). Target: at most 1.2x the bare loop's wall time, measured in the same run.

The bare loop is what a person would write: read the file, TF-IDF (the same featurizer), then per
repeat and strategy the same seed set, LogisticRegression with the same C, accuracy on the test
split, predict_proba on the remaining pool, the 50 smallest margins (or 50 at random) labelled next,
up to the budget. No calibration, no ECE, no per-class numbers, no feature or C selection, no
full-pool model, no verdict: simulate does all of those within its time.

Second part: the temperature fitted on approximate leave-one-out logits (what simulate uses) against
5-fold cross-fitting (what the workstation's retrain uses): test ECE and time, on random label
sets of several sizes.

    python bench/bench_simulate_speed.py [--data ../shared/datasets/trec/trec6.csv] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import ROOT, bare_split_tfidf  # noqa: E402
from labelloop.core.engine import coldstart  # noqa: E402
from labelloop.core.engine.calibration import reliability, softmax_t  # noqa: E402
from labelloop.core.engine.features import TextFeaturizer  # noqa: E402
from labelloop.core.engine.model import fit_model  # noqa: E402
from labelloop.core.loop.simulate import SimConfig, _ensure_two_classes, read_labelled, run_simulation  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"


def bare_loop(path, split_col, strategies, seeds_and_c, seed_size, batch, budget, seed):
    """The plain loop; returns (wall seconds, {(strategy, repeat): [accuracy per round]})."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    warnings.simplefilter("ignore", ConvergenceWarning)
    t0 = time.perf_counter()
    Xp, Xt, yp, yt, _classes = bare_split_tfidf(path, split_col)
    curves, per_strategy = {}, {s: 0.0 for s in strategies}
    for r, (seed_rows, C) in enumerate(seeds_and_c):
        for strategy in strategies:
            t_arm = time.perf_counter()
            rng = np.random.default_rng([seed, r, 7])
            lab = list(seed_rows)
            mask = np.ones(len(yp), dtype=bool)
            mask[lab] = False
            accs = []
            while True:
                clf = LogisticRegression(C=C, max_iter=500).fit(Xp[lab], yp[lab])
                accs.append(float(np.mean(clf.predict(Xt) == yt)))
                if len(lab) >= budget:
                    break
                cand = np.flatnonzero(mask)
                k = min(batch, budget - len(lab))
                if strategy == "random":
                    chosen = rng.choice(cand, k, replace=False)
                else:
                    p = np.sort(clf.predict_proba(Xp[cand]), axis=1)
                    chosen = cand[np.argsort(p[:, -1] - p[:, -2], kind="stable")[:k]]
                lab.extend(int(i) for i in chosen)
                mask[chosen] = False
            curves[(strategy, r)] = accs
            per_strategy[strategy] += time.perf_counter() - t_arm
    return time.perf_counter() - t0, curves, per_strategy


def calibration_check(path, split_col, sizes=(50, 100, 200, 500, 1000), seed=0):
    texts, labels, splits = read_labelled(path, "text", "label", split_col)
    y = np.array(labels, dtype=object)
    if split_col:
        test = np.array([s == "test" for s in splits])
    else:
        test = np.random.default_rng(seed).random(len(y)) < 0.2
    pool, tst = np.flatnonzero(~test), np.flatnonzero(test)
    classes = sorted(set(labels))
    fz = TextFeaturizer("tfidf").fit([texts[i] for i in pool])
    X = fz.transform_text(texts)
    out = []
    for n in sizes:
        if n > len(pool):
            continue
        rows = np.random.default_rng([seed, n]).choice(pool, n, replace=False)
        res = {"n": n}
        for method in ("crossfit", "alo"):
            t = time.perf_counter()
            m = fit_model(X[rows], list(y[rows]), classes, C=10.0, seed=seed, held_out=method)
            res[f"{method}_s"] = time.perf_counter() - t
            logits = m.decision(X[tst])
            local = {c: i for i, c in enumerate(m.classes_)}
            yl = np.array([local.get(v, -1) for v in y[tst]])
            ok = yl >= 0
            res[f"{method}_T"] = m.temperature_
            res[f"{method}_ece"] = reliability(softmax_t(logits, m.temperature_)[ok], yl[ok])["ece"]
            res["raw_ece"] = reliability(softmax_t(logits, 1.0)[ok], yl[ok])["ece"]
        out.append(res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "trec" / "trec6.csv"))
    ap.add_argument("--split-col", default="split")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=int, default=500)
    args = ap.parse_args()
    path = Path(args.data)
    if not path.exists():
        print(f"{path} not present (../shared data sets are outside the repository): skipped")
        return
    strategies = ["margin", "random"]
    cfg = SimConfig(
        strategies=strategies, features=["tfidf"], seed_size=50, batch=50, budget=args.budget, repeats=args.repeats
    )
    t = time.perf_counter()
    rep = run_simulation(path, "text", "label", cfg, split_col=args.split_col)
    sim_wall = time.perf_counter() - t
    # the same seed sets and C values for the bare loop
    texts, labels, splits = read_labelled(path, "text", "label", args.split_col)
    y = np.array(labels, dtype=object)
    test = np.array([s == "test" for s in splits])
    pool = np.flatnonzero(~test)
    test_texts = {texts[i] for i in np.flatnonzero(test)}
    pool = np.array([i for i in pool if texts[i] not in test_texts])
    seeds_and_c = []
    for r in range(args.repeats):
        rep_rng = np.random.default_rng([cfg.seed, r])
        seed_rows = coldstart.random_seed(len(pool), cfg.seed_size, rep_rng)
        seed_rows = _ensure_two_classes(seed_rows, y[pool], rep_rng)
        C = next(c["C"] for c in rep.choices if c["repeat"] == r)
        seeds_and_c.append((seed_rows, C))
    bare_wall, curves, bare_arms = bare_loop(
        path, args.split_col, strategies, seeds_and_c, cfg.seed_size, cfg.batch, cfg.budget, cfg.seed
    )
    print(f"== {path.name}: {args.repeats} repeats x {strategies}, seed 50, batches of 50, budget {args.budget}")
    print(f"simulate (features tfidf, C by CV, calibration every round, verdict): {sim_wall:6.1f} s")
    print(f"bare scikit-learn loop (same features, C, seed sets, batches):       {bare_wall:6.1f} s")
    ratio = sim_wall / bare_wall
    print(f"ratio {ratio:.2f}x  [{'met' if ratio <= 1.2 else 'NOT MET'}: target <= 1.2x]")
    from scipy import stats

    for strategy in strategies:
        arm = rep.curves.filter(rep.curves["strategy"] == strategy)
        sim_r = np.array([arm.filter(arm["repeat"] == r)["accuracy"].mean() for r in range(args.repeats)])
        bare_r = np.array([np.mean(curves[(strategy, r)]) for r in range(args.repeats)])
        t = stats.t.ppf(0.975, max(1, args.repeats - 1))
        half = t * bare_r.std(ddof=1) / np.sqrt(args.repeats) if args.repeats > 1 else 0.0
        d = sim_r - bare_r
        dh = t * d.std(ddof=1) / np.sqrt(args.repeats) if args.repeats > 1 else 0.0
        inside = bare_r.mean() - half <= sim_r.mean() <= bare_r.mean() + half
        sim_s = arm["compute_seconds"].sum()
        print(
            f"  {strategy:<7} curve mean accuracy: simulate {sim_r.mean():.3f}, bare loop {bare_r.mean():.3f} "
            f"[{bare_r.mean() - half:.3f}, {bare_r.mean() + half:.3f}] ({'within' if inside else 'OUTSIDE'} the "
            f"bare loop's 95% interval); paired difference {d.mean():+.3f} [{d.mean() - dh:+.3f}, {d.mean() + dh:+.3f}]"
        )
        print(f"          time in the rounds: simulate {sim_s:.1f} s, bare loop {bare_arms[strategy]:.1f} s")
    print()
    print("Temperature from approximate leave-one-out logits vs 5-fold cross-fitting (C=10):")
    sets = [(path, args.split_col)]
    sms = SHARED / "sms_spam" / "sms_spam.csv"
    if sms.exists():
        sets.append((sms, None))
    for p, sc in sets:
        for r in calibration_check(p, sc):
            print(
                f"  {p.stem:<10} n={r['n']:<5} ECE raw {r['raw_ece']:.3f}  cross-fit {r['crossfit_ece']:.3f} "
                f"(T {r['crossfit_T']:.2f}, {r['crossfit_s']:.2f} s)  ALO {r['alo_ece']:.3f} "
                f"(T {r['alo_T']:.2f}, {r['alo_s']:.2f} s)"
            )


if __name__ == "__main__":
    main()
