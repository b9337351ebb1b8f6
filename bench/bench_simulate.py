"""`labelloop simulate` on every classification set in ../shared/datasets (issue: AL engine).

Target: SMS spam with margin, entropy and random, 3 repeats, under 2 minutes (wall time of the
whole command, printed). For every set it prints labels-to-target for margin and random with their
spread, and the verdict.

    python bench/bench_simulate.py [--repeats 3] [--budget 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT  # noqa: E402
from labelloop.core.simulate import SimConfig, format_report, run_simulation, write_outputs  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
SETS = [("SMS spam", "sms_spam/sms_spam.csv", None), ("TREC-6", "trec/trec6.csv", "split"),
        ("SST-2", "sst2/sst2.csv", None), ("MR polarity", "rt_polarity/rt_polarity.csv", None),
        ("ArSarcasm sentiment", "arsarcasm/arsarcasm_sentiment.csv", "split")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
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
        strategies = ["margin", "entropy", "random"]
        cfg = SimConfig(strategies=strategies, seed_size=50, batch=50, budget=args.budget, repeats=args.repeats)
        t = time.perf_counter()
        r = run_simulation(path, "text", "label", cfg, split_col=split)
        wall = time.perf_counter() - t
        write_outputs(r, OUT / f"sim_{path.stem}.csv", OUT / f"sim_{path.stem}.png")
        print(f"== {name} ({wall:.1f} s)")
        print(format_report(r, cfg))
        print()
        s = {row["strategy"]: row for row in r.summary.iter_rows(named=True)}

        def ltt(k):
            m, sd, reached = s[k]["labels_to_target_mean"], s[k]["labels_to_target_std"], s[k]["reached"]
            return "never" if m is None else f"{m:.0f} ± {sd or 0:.0f} ({reached}/{args.repeats})"
        rows.append((name, wall, r.target, ltt("margin"), ltt("random"), r.verdict))
    print(f"{'data set':<22}{'seconds':>8}{'target':>8}  {'margin labels-to-target':<26}{'random labels-to-target':<26}verdict")
    for name, wall, target, m, rnd, verdict in rows:
        print(f"{name:<22}{wall:>8.1f}{target:>8.3f}  {m:<26}{rnd:<26}{verdict}")
    sms = [r for r in rows if r[0] == "SMS spam"]
    if sms:
        print(f"\n  [{'met' if sms[0][1] < 120 else 'NOT MET'}] SMS spam, margin+entropy+random, "
              f"{args.repeats} repeats under 2 minutes ({sms[0][1]:.1f} s)")


if __name__ == "__main__":
    main()
