"""Live measurement on TREC-6, labelled by a scripted oracle through the project API (issue: is AL
working here?), then `check`, `report`, and `simulate` on the same data for the direction of the
AL-vs-random comparison.

The project: 2,000 pool questions (TREC-6 train, unlabelled), 500 test questions (labelled, split
test), default settings (margin, audit 10%, retrain every 25 labels, features auto). The oracle
answers each item the workstation would show with its true label, through ``decide``, waiting for
the retrains the service starts, until --labels labels. Prints the checklist, the warning signs,
the AL-vs-random points of the last version, and writes the report to bench/out/live_report/.

    python bench/bench_live.py [--labels 600] [--sim-repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, ROOT  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=600)
    ap.add_argument("--sim-repeats", type=int, default=5)
    args = ap.parse_args()
    src = SHARED / "trec" / "trec6.csv"
    if not src.exists():
        print(f"{src} not present: skipped")
        return
    from labelloop.core.api.service import Service
    from labelloop.core.loop.simulate import SimConfig, format_report, run_simulation
    from labelloop.core.store.project import init_project
    from labelloop.core.text.report import write_report
    from labelloop.core.text.status import format_readiness

    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rng = random.Random(6)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    rng.shuffle(train)
    rng.shuffle(test)
    train, test = train[:2000], test[:500]
    labels = sorted({r["label"] for r in rows})
    work = OUT / "live_bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "trec_2000.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "split"])
        for r in train:
            w.writerow([f"p{r['id']}", r["text"], r["label"], "pool"])
        for r in test:
            w.writerow([f"t{r['id']}", r["text"], r["label"], "test"])
    truth = {f"p{r['id']}": r["label"] for r in train}
    d = init_project(work / "proj", labels, name="trec6-live")
    cfg = d / "labelloop.toml"
    cfg.write_text(cfg.read_text().replace("overlap_share = 0.1", "overlap_share = 0.0"))
    unlabelled = work / "trec_pool_unlabelled.csv"
    with open(unlabelled, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "split"])
        for r in train:
            w.writerow([f"p{r['id']}", r["text"], "", "pool"])
        for r in test:
            w.writerow([f"t{r['id']}", r["text"], r["label"], "test"])
    svc = Service(d, compute="thread", owner="oracle")
    t0 = time.perf_counter()
    svc.handle(
        "oracle", "import", {"path": str(unlabelled), "id_col": "id", "label_col": "label", "split_col": "split"}
    )
    sess = svc.handle("oracle", "open_session", {"client": "bench"})["session"]
    n = 0
    it = svc.handle("oracle", "next", {"session": sess})["item"]
    waits = 0
    while n < args.labels:
        if it is None:  # the queue ran dry: a retrain is coming
            waits += 1
            time.sleep(0.2)
            it = svc.handle("oracle", "next", {"session": sess})["item"]
            if waits > 3000:
                raise SystemExit("no item for 600 s")
            continue
        ans = svc.handle(
            "oracle",
            "decide",
            {
                "item_id": it["item_id"],
                "action": "label",
                "labels": [truth[it["item_id"]]],
                "msg_id": uuid.uuid4().hex,
                "session": sess,
                "lease": it.get("lease"),
                "duration_ms": 4000,
            },
        )
        n += 1
        it = ans.get("item")
    while svc.job and svc.job.running:
        time.sleep(0.2)
    label_wall = time.perf_counter() - t0
    r = svc.handle("oracle", "check", {})
    svc.close()
    page = write_report(r, work / "live_report")
    print(
        f"TREC-6 live project: pool {len(train):,}, test {len(test):,}; {n} oracle labels through the API in "
        f"{label_wall:.0f} s; {len(r['measurements'])} model versions measured"
    )
    print()
    print(format_readiness(r))
    print()
    last = r["measurements"][-1]
    print(
        f"latest model v{last['version']}: accuracy {last['accuracy']:.3f} (majority {last['majority_baseline']:.3f}), "
        f"macro-F1 {last['macro_f1']:.3f}, ECE {last['ece']:.3f} (raw {last['ece_uncalibrated']:.3f}), "
        f"features {last.get('features')}; labels AL {last['n_al']}, audit {last['n_audit']}, cold {last['n_cold']}"
    )
    arms = last.get("arms") or {}
    for p in arms.get("points") or []:
        print(
            f"  equal budget {p['n']:>3} arm labels (+{arms['cold_labels']} cold start): AL {p['al']:.3f} "
            f"[{p['al_low']:.3f}, {p['al_high']:.3f}]  random {p['random']:.3f} [{p['random_low']:.3f}, "
            f"{p['random_high']:.3f}]  AL - random {p['diff']:+.3f} [{p['diff_low']:+.3f}, {p['diff_high']:+.3f}]"
        )
    if arms.get("note"):
        print("  " + arms["note"])
    for c in r.get("cost_per_point") or []:
        if c.get("cost_per_point") is not None:
            print(
                f"  v{c['version']}: {c['spent']:.2f} spent for {c['gain_points']:+.1f} points in the window: "
                f"{c['cost_per_point']:.3f} per point"
            )
    print(f"\nReport: {page}")
    # simulate on the same pool/test split, for the direction of AL against random
    cfg_sim = SimConfig(
        strategies=["margin", "random"],
        features=["auto"],
        seed_size=50,
        batch=50,
        budget=max(100, min(args.labels, 600)),
        repeats=args.sim_repeats,
    )
    t = time.perf_counter()
    rep = run_simulation(data, "text", "label", cfg_sim, split_col="split")
    print(f"\n== simulate on the same data ({time.perf_counter() - t:.0f} s)")
    print(format_report(rep, cfg_sim))
    # the direction at the budgets the live arms could be compared at (the audit arm is 10% of the labels)
    import polars as pl

    from labelloop.core.loop.simulate import paired_interval

    print("\nsimulate, margin - random accuracy by labels (paired over repeats), beside the live equal-budget points:")
    for n_sim in sorted(set(rep.curves["n_labels"].to_list())):
        a = rep.curves.filter((pl.col("strategy") == "margin") & (pl.col("n_labels") == n_sim)).sort("repeat")
        b = rep.curves.filter((pl.col("strategy") == "random") & (pl.col("n_labels") == n_sim)).sort("repeat")
        iv = paired_interval(a["accuracy"].to_numpy(), b["accuracy"].to_numpy())
        live = [p for p in (arms.get("points") or []) if abs(p["labels_each"] - n_sim) <= 25]
        side = (
            "; live AL - random at {} labels each: {:+.3f} [{:+.3f}, {:+.3f}]".format(
                live[-1]["labels_each"], live[-1]["diff"], live[-1]["diff_low"], live[-1]["diff_high"]
            )
            if live
            else ""
        )
        print(f"  {n_sim:>4} labels: {iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]{side}")


if __name__ == "__main__":
    main()
