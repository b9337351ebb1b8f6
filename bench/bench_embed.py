"""Embedding 1,000,000 short texts (issue: features that know language).

Targets: within 60 s on this machine, peak RSS under 2 GB. Measured on the path a project takes
(``core.features.ensure_embeddings``: texts in, float16 .npy cache out, chunk by chunk), in a fresh
process so the peak RSS is its own; the baseline in the same run is building the TF-IDF matrix of
the same texts (what every project already pays once), so the ratio says what embeddings add.

    python bench/bench_embed.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._util import OUT, run_child, synthetic_csv  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    data = synthetic_csv(OUT / f"synthetic_{args.rows}.csv", args.rows, labelled=False)
    cache = OUT / "embed_bench"
    shutil.rmtree(cache, ignore_errors=True)
    read = (
        "import csv, time\n"
        f"with open(r'{data}', newline='', encoding='utf-8') as f:\n"
        "    texts = [r[1] for r in list(csv.reader(f))[1:]]\n"
    )
    emb = run_child(
        read + "import numpy as np\n"
        "from labelloop.core.engine.features import ensure_embeddings\n"
        "t = time.perf_counter()\n"
        f"ensure_embeddings(r'{cache}', 'bench', len(texts), lambda: texts)\n"
        "wall = time.perf_counter() - t\n"
        f"E = np.load(r'{cache}/embeddings.npy', mmap_mode='r', allow_pickle=False)\n"
        "print(wall, E.shape[0], E.shape[1], E.dtype, (E.shape[0] * E.shape[1] * 2) / 2**20,"
        " float(np.linalg.norm(E[12345].astype(np.float32))))\n"
    )
    wall, n, d, dtype, mib, norm = emb[2].split()
    tfidf = run_child(
        read + "from labelloop.core.engine.features import TextFeaturizer\n"
        "t = time.perf_counter()\n"
        "fz = TextFeaturizer('hashing').fit(texts); X = fz.transform_text(texts)\n"
        "print(time.perf_counter() - t, X.shape[1], X.nnz)\n"
    )
    t_tfidf = float(tfidf[2].split()[0])
    print(f"{int(n):,} texts of about 100 characters ({data.name})")
    print(f"{'step':<58}{'seconds':>9}{'peak RSS MiB':>14}")
    print(f"{'embed (WordLlama 256-d) and cache as float16 .npy':<58}{float(wall):>9.1f}{emb[1]:>14.0f}")
    print(f"{'  baseline: hashed TF-IDF of the same texts (the default at 1M)':<58}{t_tfidf:>9.1f}{tfidf[1]:>14.0f}")
    print(
        f"  cache {int(n):,} x {d} {dtype} = {float(mib):.0f} MiB on disk, memory-mapped on reading; "
        f"row norm {float(norm):.3f}"
    )
    print(f"  embedding / TF-IDF time ratio: {float(wall) / t_tfidf:.2f}x")
    print()
    for name, ok in [
        (f"embed 1M texts within 60 s ({float(wall):.1f} s)", float(wall) <= 60),
        (f"peak RSS under 2 GB ({emb[1]:.0f} MiB)", emb[1] < 2048),
    ]:
        print(f"  [{'met' if ok else 'NOT MET'}] {name}")
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
