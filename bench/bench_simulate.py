"""`labelloop simulate` on the classification sets in ../shared/datasets (issues: AL engine, 22).

For every set: simulate's report (labels to 90, 95 and 98% of the full-pool accuracy per arm with
95% bootstrap intervals over repeats, never-reached repeats counted at the budget; the paired
comparisons; a verdict per target), then one table over the sets, and for strategy auto the issue's
target: auto's labels-to-target no more than the best single arm's upper interval bound on every set
and target, and below the worst arm's on at least three sets.

    python bench/bench_simulate.py [--repeats 5] [--budget 500] [--features tfidf]
                                   [--strategies margin,random,auto] [--sets 5] [--only trec6]
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
    ap.add_argument("--features", default="tfidf")
    ap.add_argument("--strategies", default="margin,random,auto")
    ap.add_argument("--sets", type=int, default=5, help="the first N sets of the list (default: the five)")
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--only", help="run one set by its file stem, e.g. sms_spam")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, rel, split in SETS[: args.sets]:
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
        rows.append((name, wall, r.targets))
    for feat in cfg.features:
        print(f"Labels to target, features {feat} (mean [95% interval] over {args.repeats} repeats):")
        print(f"{'data set':<22}{'target':>7}  " + "".join(f"{st:<24}" for st in strategies))
        for name, _wall, table in rows:
            for frac in sorted({t["target"] for t in table}):
                cells = []
                for st in strategies:
                    t = next(x for x in table if x["target"] == frac and x["strategy"] == st and x["features"] == feat)
                    cells.append(f"{t['labels']:.0f} [{t['low']:.0f}, {t['high']:.0f}] {t['reached']}/{t['repeats']}")
                print(f"{name:<22}{frac * 100:>6g}%  " + "".join(f"{c:<24}" for c in cells))
        if "auto" in strategies and len(strategies) > 1:
            auto_check(rows, strategies, feat)


def auto_check(rows, strategies, feat) -> None:
    """The issue's target for auto: on every set and target, auto's mean labels-to-target is no more
    than the best single arm's upper interval bound; and on at least three sets, lower than the worst
    arm's (the worst arm at each target; labels summed over the targets)."""
    singles = [s for s in strategies if s != "auto"]
    ok_all, below_worst, misses = True, 0, []
    for name, _wall, table in rows:
        auto_sum = worst_sum = 0.0
        for frac in sorted({t["target"] for t in table}):
            at = {t["strategy"]: t for t in table if t["target"] == frac and t["features"] == feat}
            best = min(singles, key=lambda s: at[s]["labels"])
            worst = max(singles, key=lambda s: at[s]["labels"])
            bound = at[best]["high"] if at[best]["high"] == at[best]["high"] else at[best]["labels"]
            if at["auto"]["labels"] > bound + 1e-9:
                ok_all = False
                misses.append(f"{name} {frac * 100:g}%: auto {at['auto']['labels']:.0f} > {best} upper {bound:.0f}")
            auto_sum += at["auto"]["labels"]
            worst_sum += at[worst]["labels"]
        below_worst += auto_sum < worst_sum
    print(f"  auto <= the best single arm's upper bound on every set and target: {'met' if ok_all else 'NOT met'}")
    for m in misses:
        print(f"    {m}")
    print(
        f"  auto below the worst arm (labels summed over the targets) on {below_worst} of {len(rows)} sets "
        "(target: >= 3): "
        f"{'met' if below_worst >= 3 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
