"""`labelloop simulate` on every classification set in ../shared/datasets (issue: AL engine).

Target: SMS spam with margin, entropy and random, 3 repeats, under 2 minutes (wall time of the
whole command, printed). For every set it prints labels-to-target for margin and random under each
featurizer (--features, default tfidf,embed,tfidf+embed) with a 95% bootstrap interval over repeats
(never-reached repeats counted at the budget), the paired comparisons, and the verdict.

    python bench/bench_simulate.py [--repeats 5] [--budget 500] [--features tfidf,embed,tfidf+embed]
                                   [--strategies margin,random] [--only trec6]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT  # noqa: E402
from labelloop.core.loop.simulate import SimConfig, format_report, run_simulation, write_outputs  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
SETS = [
    ("SMS spam", "sms_spam/sms_spam.csv", None),
    ("TREC-6", "trec/trec6.csv", "split"),
    ("SST-2", "sst2/sst2.csv", None),
    ("MR polarity", "rt_polarity/rt_polarity.csv", None),
    ("ArSarcasm sentiment", "arsarcasm/arsarcasm_sentiment.csv", "split"),
    ("TREC-50", "trec/trec50.csv", "split"),
    ("ArSarcasm dialect", "arsarcasm/arsarcasm_dialect.csv", "split"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--features", default="tfidf,embed,tfidf+embed")
    ap.add_argument("--strategies", default="margin,random")
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--only", help="run one set by its file stem, e.g. sms_spam")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rel, split in SETS:
        path = SHARED / rel
        if args.only and args.only not in rel:
            continue
        if not path.exists():
            print(f"{name}: {path} not present, skipped")
            continue
        strategies = args.strategies.split(",")
        cfg = SimConfig(
            strategies=strategies,
            seed_size=50,
            batch=50,
            budget=args.budget,
            repeats=args.repeats,
            features=args.features.split(","),
        )
        t = time.perf_counter()
        r = run_simulation(path, "text", "label", cfg, split_col=split)
        wall = time.perf_counter() - t
        write_outputs(r, OUT / f"sim_{path.stem}.csv", OUT / f"sim_{path.stem}.png")
        print(f"== {name} ({wall:.1f} s)")
        print(format_report(r, cfg))
        print()
        import numpy as np
        import polars as pl

        from labelloop.core.loop.simulate import labels_to_target

        per = labels_to_target(r.curves, r.target)

        def ltt(feat, strat):
            d = per.filter((pl.col("features") == feat) & (pl.col("strategy") == strat))
            v = d["labels_to_target"].fill_null(cfg.budget).to_numpy().astype(float)
            reached = int(d["labels_to_target"].is_not_null().sum())
            if len(v) >= 2:
                boots = v[np.random.default_rng(0).integers(0, len(v), (2000, len(v)))].mean(axis=1)
                lo, hi = np.quantile(boots, [0.025, 0.975])
                return f"{v.mean():.0f} [{lo:.0f}, {hi:.0f}] ({reached}/{len(v)})"
            return f"{v.mean():.0f} ({reached}/{len(v)})"

        for feat in cfg.features:
            rows.append((name, wall, r.target, feat, *[ltt(feat, st) for st in ("margin", "random")], r.verdict))
    print(
        f"{'data set':<22}{'seconds':>8}{'target':>8}  {'features':<13}{'margin labels-to-target':<26}"
        f"{'random labels-to-target':<26}verdict"
    )
    for name, wall, target, feat, m, rnd, verdict in rows:
        print(f"{name:<22}{wall:>8.1f}{target:>8.3f}  {feat:<13}{m:<26}{rnd:<26}{verdict}")
    sms = [r for r in rows if r[0] == "SMS spam"]
    if sms:
        same = args.strategies == "margin,entropy,random" and args.features == "tfidf" and args.repeats == 3
        tag = ("met" if sms[0][1] < 120 else "NOT MET") if same else "info"
        print(
            f"\n  [{tag}] SMS spam, {args.strategies}, features {args.features}, {args.repeats} repeats: "
            f"{sms[0][1]:.1f} s (the target, under 2 minutes, is for margin,entropy,random / tfidf / 3 repeats)"
        )


if __name__ == "__main__":
    main()
