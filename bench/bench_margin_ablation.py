"""Why simulate's margin arm learned worse than a bare scikit-learn margin loop (issue 22, point 0).

One loop, the bare one of bench/bench_simulate_speed.py (TF-IDF, LogisticRegression(C), the same seed
sets, batches of 50 to a budget of 500), with labelloop's pieces switched in one at a time:

- ``fit``: scikit-learn's LogisticRegression, or labelloop's ``fit_model`` (its solver settings);
- ``warm``: each round's fit started from the previous round's model (what simulate does);
- ``probs``: margins on raw probabilities, or on temperature-scaled ones (the calibrated model);
- ``select``: a plain argsort of the margins, or labelloop's strategy object and ``select_batch``.

Per condition: the curve mean accuracy (the mean over the rounds) and its paired difference from the
bare loop with a 95% interval over the repeats (t-interval of the per-repeat differences), in the
same run. Needs ../shared/datasets/trec/trec6.csv.

    python bench/bench_margin_ablation.py [--repeats 5] [--data PATH]
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

SHARED = ROOT.parent / "shared" / "datasets"

CONDITIONS = {
    # name: (fit, warm, probs, select)
    "bare loop": ("sklearn", False, "raw", "argsort"),
    "+ labelloop fit": ("labelloop", False, "raw", "argsort"),
    "+ warm start": ("labelloop", True, "raw", "argsort"),
    "+ calibrated probs": ("labelloop", False, "calibrated", "argsort"),
    "+ labelloop select": ("labelloop", False, "raw", "labelloop"),
    "simulate (all four)": ("labelloop", True, "calibrated", "labelloop"),
}


def run(cond, Xp, Xt, yp, yt, classes, seed_rows, C, batch, budget, rng):
    from sklearn.linear_model import LogisticRegression

    from labelloop.core.engine.model import fit_model
    from labelloop.core.engine.strategies import get_strategy, margin, select_batch

    fit, warm, probs, select = cond
    lab = list(seed_rows)
    mask = np.ones(len(yp), dtype=bool)
    mask[lab] = False
    accs, model = [], None
    while True:
        if fit == "sklearn":
            clf = LogisticRegression(C=C, max_iter=500).fit(Xp[lab], yp[lab])
            accs.append(float(np.mean(clf.predict(Xt) == yt)))
            proba = clf.predict_proba
        else:
            model = fit_model(
                Xp[lab],
                list(yp[lab]),
                classes,
                calibration="temperature" if probs == "calibrated" else "none",
                C=C,
                seed=0,
                held_out="alo",
                warm_from=model if warm else None,
            )
            pred = np.array(model.classes_, dtype=object)[model.decision(Xt).argmax(1)]
            accs.append(float(np.mean(pred == yt)))
            proba = model.predict_proba
        if len(lab) >= budget:
            return accs
        cand = np.flatnonzero(mask)
        k = min(batch, budget - len(lab))
        p = proba(Xp[cand])
        if select == "argsort":
            chosen = cand[np.argsort(margin(p) * -1.0, kind="stable")[:k]]
        else:
            chosen = cand[select_batch(get_strategy("margin"), len(cand), k, rng=rng, scores=margin(p)).index]
        lab.extend(int(i) for i in chosen)
        mask[chosen] = False


def main() -> None:
    from scipy import stats
    from sklearn.exceptions import ConvergenceWarning

    from labelloop.core.engine import coldstart
    from labelloop.core.loop.simulate import _ensure_two_classes

    warnings.simplefilter("ignore", ConvergenceWarning)
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "trec" / "trec6.csv"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--C", type=float, default=10.0)
    args = ap.parse_args()
    path = Path(args.data)
    if not path.exists():
        print(f"{path} not present (../shared data sets are outside the repository): skipped")
        return
    Xp, Xt, yp, yt, classes = bare_split_tfidf(path)
    means: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    t0 = time.perf_counter()
    for r in range(args.repeats):
        rep_rng = np.random.default_rng([0, r])
        seed_rows = _ensure_two_classes(coldstart.random_seed(len(yp), 50, rep_rng), yp, rep_rng)
        for name, cond in CONDITIONS.items():
            accs = run(
                cond, Xp, Xt, yp, yt, classes, seed_rows, args.C, args.batch, args.budget, np.random.default_rng([r, 7])
            )
            means[name].append(float(np.mean(accs)))
    print(
        f"== {path.name}: margin, seed 50, batches of {args.batch} to {args.budget}, C={args.C:g}, "
        f"{args.repeats} repeats ({time.perf_counter() - t0:.0f} s)"
    )
    base = np.array(means["bare loop"])
    print(f"  {'condition':<22} {'curve mean':>10}   {'diff vs bare loop [95% interval]':>34}")
    for name in CONDITIONS:
        m = np.array(means[name])
        d = m - base
        if len(d) > 1 and d.std(ddof=1) > 0:
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            iv = f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]"
        else:
            iv = f"{d.mean():+.4f}"
        print(f"  {name:<22} {m.mean():10.4f}   {iv:>34}")


if __name__ == "__main__":
    main()
