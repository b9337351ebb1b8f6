"""Cold start: choosing the first items to label before any model exists.

random; keyword/regex seeding (matched in DuckDB, mixed with random items);
typicality (k-means on the features, the most typical item of each cluster,
after Hacohen et al. 2022); stratified by an imported or current model's
predicted class; an imported model as the first scorer is handled by the loop.
"""

from __future__ import annotations

import re

import numpy as np

from labelloop.core.util.errors import LabelloopError


def random_seed(n_pool: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(n_pool, size=min(k, n_pool), replace=False)


def keyword_seed(
    matched: np.ndarray, n_pool: int, k: int, rng: np.random.Generator, match_share: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Half (match_share) from the pool rows matching the query, the rest at random from the others.
    Returns (rows, matched_flag)."""
    k = min(k, n_pool)
    n_match = min(int(round(match_share * k)), len(matched))
    pick = rng.choice(matched, size=n_match, replace=False) if n_match else np.zeros(0, dtype=np.int64)
    mask = np.ones(n_pool, dtype=bool)
    mask[pick] = False
    others = np.flatnonzero(mask)
    rest = rng.choice(others, size=min(k - n_match, len(others)), replace=False)
    return np.concatenate([pick, rest]).astype(np.int64), np.concatenate(
        [np.ones(len(pick), bool), np.zeros(len(rest), bool)]
    )


def check_seed_query(query: str) -> str:
    if not query or not query.strip():
        raise LabelloopError(
            "keyword seeding needs a query: set [strategy] seed_query or pass --seed-query 'free|prize'."
        )
    try:
        re.compile(query)
    except re.error as exc:
        raise LabelloopError(f"--seed-query {query!r} is not a valid regular expression ({exc}).") from None
    return query


def typicality_seed(
    X_pool, k: int, rng: np.random.Generator, *, sample: int = 20_000, svd_dims: int = 64, neighbours: int = 20
) -> np.ndarray:
    """k-means into k clusters; from each, the item with the highest typicality
    (inverse mean distance to its nearest neighbours inside the cluster)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    n = X_pool.shape[0]
    k = min(k, n)
    rows = rng.choice(n, size=min(sample, n), replace=False) if n > sample else np.arange(n)
    Xs = X_pool[rows]
    dims = min(svd_dims, Xs.shape[1] - 1, len(rows) - 1)
    Z = TruncatedSVD(dims, random_state=int(rng.integers(1 << 30))).fit_transform(Xs) if dims >= 2 else Xs.toarray()
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(1 << 30))).fit(Z)
    chosen = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if len(members) == 0:
            continue
        if len(members) == 1:
            chosen.append(rows[members[0]])
            continue
        Zm = Z[members]
        d = np.sqrt(np.maximum(2 - 2 * (Zm @ Zm.T), 0))  # unit vectors: euclidean from cosine
        kn = min(neighbours, len(members) - 1)
        nearest = np.partition(d, kn, axis=1)[:, 1 : kn + 1]
        typicality = 1.0 / (nearest.mean(axis=1) + 1e-9)
        chosen.append(rows[members[int(np.argmax(typicality))]])
    chosen = np.array(chosen, dtype=np.int64)
    if len(chosen) < k:
        rest = np.setdiff1d(np.arange(n), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=k - len(chosen), replace=False)])
    return chosen


def stratified_seed(predicted: np.ndarray, n_classes: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """An equal share of the batch from each predicted class (what a class lacks goes to the others)."""
    k = min(k, len(predicted))
    groups = [rng.permutation(np.flatnonzero(predicted == c)) for c in range(n_classes)]
    chosen: list[int] = []
    i = 0
    while len(chosen) < k:
        progressed = False
        for g in groups:
            if i < len(g) and len(chosen) < k:
                chosen.append(int(g[i]))
                progressed = True
        if not progressed:
            break
        i += 1
    return np.array(chosen, dtype=np.int64)


def seed_adequacy(label_counts: dict[str, int], labels: list[str], minimum: int) -> dict:
    """Labels per class against the configured minimum, and which classes fall short."""
    per_class = {c: int(label_counts.get(c, 0)) for c in labels}
    short = {c: minimum - n for c, n in per_class.items() if n < minimum}
    return {"minimum": minimum, "per_class": per_class, "short": short, "adequate": not short}
