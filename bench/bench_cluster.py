"""An external pool on a Dask cluster (issue 18): featurise, then score + select after a retrain, on
synthetic pools of 1M, 3M and 10M short texts (100,000 rows per Parquet file: 10, 30 and 100 files),
with ``local:2`` on this machine; the in-process executor on the 1M pool, same run, is the baseline.

Prints per size: featurise seconds and throughput (items/s), score + select 100 (median of 3, margin,
a model trained on 2,000 labelled rows), peak RSS of the driver and of each worker; then the ratios
the issue sets targets for: the 10M rescore within 12x the 1M one (linear), the cluster's overhead
on 1M within 1.5x the in-process path, no process above 4 GB.

    python bench/bench_cluster.py [--sizes 1000000,3000000,10000000] [--workers 2] [--keep]

The pools and their features are written under bench/out/cluster/ (about 1 GB of features per
million texts); --keep leaves them for a re-run.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT  # noqa: E402

ROWS_PER_FILE = 100_000
CLASSES = ("sport", "tech", "food")


def _vocab(rng) -> tuple[list[str], dict]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = sorted({"".join(rng.choice(letters, int(rng.integers(3, 9)))) for _ in range(8000)})
    topical = {c: words[i * 200 : (i + 1) * 200] for i, c in enumerate(CLASSES)}
    return words[600:], topical


def write_pool(folder: Path, n: int, seed: int = 0) -> float:
    """``n`` synthetic texts (8-20 words, 2-4 of them topical) in files of ROWS_PER_FILE rows."""
    import polars as pl

    t = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    common, topical = _vocab(np.random.default_rng(12345))
    common = np.array(common)
    top = {c: np.array(w) for c, w in topical.items()}
    for f, start in enumerate(range(0, n, ROWS_PER_FILE)):
        path = folder / f"part-{f:04d}.parquet"
        m = min(ROWS_PER_FILE, n - start)
        if path.exists():
            continue
        cls = rng.integers(0, 3, m)
        lens = rng.integers(8, 21, m)
        texts = []
        for i in range(m):
            k = int(rng.integers(2, 5))
            words = list(rng.choice(common, lens[i] - k)) + list(rng.choice(top[CLASSES[cls[i]]], k))
            rng.shuffle(words)
            texts.append(" ".join(words))
        pl.DataFrame(
            {"id": [f"x{start + i}" for i in range(m)], "text": texts, "label": [CLASSES[c] for c in cls]}
        ).write_parquet(path)
    return time.perf_counter() - t


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_peaks(compute) -> list[float]:
    if not hasattr(compute, "client"):
        return []
    got = compute.client.run(lambda: __import__("resource").getrusage(0).ru_maxrss / 1024)
    return sorted(got.values())


def _labelled(manifest, fz, n: int = 2000, seed: int = 1):
    """A model's training rows: ``n`` random pool rows with their synthetic labels."""
    import polars as pl

    from labelloop.core.engine.model import fit_model

    rng = np.random.default_rng(seed)
    files = sorted(Path(manifest.folder).glob("*.parquet"))[:3]
    df = pl.concat([pl.read_parquet(f) for f in files]).sample(n, seed=seed)
    X = fz.transform_text(df["text"].to_list())
    return fit_model(X, df["label"].to_list(), list(CLASSES), C=1.0, held_out="alo", seed=int(rng.integers(99)))


def run_size(base: Path, n: int, compute, label: str, *, fz=None) -> dict:
    from labelloop.core.pool.partitions import register
    from labelloop.core.pool.scoring import featurise_pool, fit_pool_featurizer, select_external

    folder = base / f"pool_{n}"
    gen = write_pool(folder, n)
    manifest = register(folder)
    t = time.perf_counter()
    fz = fz or fit_pool_featurizer(manifest, compute)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    feats = featurise_pool(manifest, base / f"project_{n}", compute, featurizer=fz)
    t_feat = time.perf_counter() - t
    model = _labelled(manifest, fz)
    times = []
    for seed in range(3):
        t = time.perf_counter()
        sel = select_external(
            feats, manifest, compute, model, "margin", 100, rng=np.random.default_rng(seed), audit_share=0.1
        )
        times.append(time.perf_counter() - t)
        assert len(sel) == 100
    return {
        "label": label,
        "n": n,
        "files": len(manifest.partitions),
        "write": gen,
        "fit_idf": t_fit,
        "featurise": t_feat,
        "built": feats.built,
        "score_select": statistics.median(times),
        "workers_peak": _worker_peaks(compute),
        "driver_peak": _peak_mib(),
        "fz": fz,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,3000000,10000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from labelloop.core.pool.compute import InProcess, open_compute

    base = OUT / "cluster"
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    cluster = open_compute(f"local:{args.workers}")
    try:
        for n in sizes:
            r = run_size(base, n, cluster, f"local:{args.workers}")
            rows.append(r)
            print(_line(r), flush=True)
    finally:
        cluster.close()
    # the baseline: the in-process executor on the smallest pool, its features already built
    small = rows[0]
    r = run_size(base, small["n"], InProcess(), "in-process", fz=small["fz"])
    rows.append(r)
    print(_line(r), flush=True)
    print()
    big = next((x for x in rows if x["n"] == max(sizes) and x["label"] != "in-process"), None)
    ratio_lin = big["score_select"] / small["score_select"] if big else float("nan")
    growth = big["n"] / small["n"] if big else float("nan")
    overhead = small["score_select"] / r["score_select"]
    peak = max([x["driver_peak"] for x in rows] + [w for x in rows for w in x["workers_peak"]])
    print(
        f"rescore + select: {big['n']:,} against {small['n']:,} = {ratio_lin:.2f}x for {growth:.0f}x the items (target <= 12x)"
    )
    print(f"cluster overhead on {small['n']:,}: {overhead:.2f}x the in-process executor (target <= 1.5x)")
    print(f"largest process: {peak:,.0f} MiB (target < 4,096 MiB)")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


def _line(r: dict) -> str:
    w = ", ".join(f"{x:,.0f}" for x in r["workers_peak"]) or "-"
    return (
        f"{r['label']:<11} {r['n']:>11,} items {r['files']:>4} files | idf fit {r['fit_idf']:6.1f} s | featurise "
        f"{r['featurise']:7.1f} s ({r['built']} built; {r['n'] / max(r['featurise'], 1e-9):>9,.0f} items/s) | score + "
        f"select 100: {r['score_select']:6.2f} s | peak RSS MiB driver {r['driver_peak']:,.0f}, workers {w}"
    )


if __name__ == "__main__":
    main()
