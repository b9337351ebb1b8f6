"""Query strategies: score the unlabelled pool, pick a batch, say why.

Every score is "higher = more worth labelling". Scores are computed over the
pool in chunks with vectorised numpy and a running top-k, so a 1M-item pool
never needs a per-item Python loop. Ties are broken by pool order (lower row
first), so a batch is reproducible for a given seed.

References: margin / least confidence / entropy (Settles 2009); BALD (Houlsby et
al. 2011) here from a bootstrap committee; vote entropy QBC (Dagan & Engelson
1995); CAL (Margatina et al. 2021); diversity by k-means over a margin
pre-filter (cf. Zhdanov 2019); stochastic power sampling (Kirsch et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import EmptyPoolError, LabelloopError

STRATEGY_NAMES = ("random", "least_confidence", "margin", "entropy", "bald", "qbc", "cal", "diversity", "power")
CHUNK = 65_536


# --- uncertainty scores on probability arrays (n, k) ------------------------------------------

def least_confidence(p: np.ndarray) -> np.ndarray:
    return 1.0 - p.max(axis=1)


def margin(p: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): the gap between the two most probable classes, inverted."""
    if p.shape[1] < 2:
        return np.zeros(len(p))
    if p.shape[1] == 2:
        return 1.0 - np.abs(p[:, 0] - p[:, 1])
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)


def bald(committee: np.ndarray) -> np.ndarray:
    """Mutual information between prediction and model: H(mean p) - mean H(p_k); committee is (K, n, k)."""
    mean = committee.mean(axis=0)
    return entropy(mean) - np.mean([entropy(c) for c in committee], axis=0)


def vote_entropy(committee: np.ndarray) -> np.ndarray:
    """Entropy of the committee's hard votes; committee is (K, n, k)."""
    k_models, n, k = committee.shape
    votes = committee.argmax(axis=2)  # (K, n)
    counts = np.zeros((n, k))
    for m in range(k_models):
        counts[np.arange(n), votes[m]] += 1
    return entropy(counts / k_models)


UNCERTAINTY = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}


# Multi-label: each column is its own binary decision; an item is as uncertain as its labels together.
def ml_margin(p: np.ndarray) -> np.ndarray:
    """Mean over labels of 1 - |p - (1 - p)|."""
    return np.mean(1.0 - np.abs(2.0 * p - 1.0), axis=1)


def ml_least_confidence(p: np.ndarray) -> np.ndarray:
    """The least confident label: max over labels of 1 - max(p, 1 - p)."""
    return np.max(1.0 - np.maximum(p, 1.0 - p), axis=1)


def ml_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return np.sum(-(q * np.log(q) + (1 - q) * np.log(1 - q)), axis=1)


ML_UNCERTAINTY = {"least_confidence": ml_least_confidence, "margin": ml_margin, "entropy": ml_entropy}
ML_STRATEGIES = ("random", "least_confidence", "margin", "entropy", "diversity", "power")


# --- selection -------------------------------------------------------------------------------

def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, highest first; ties go to the lower index. O(n) + O(k log k)."""
    n = len(scores)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        kth = np.partition(scores, n - k)[n - k]
        cand = np.flatnonzero(scores >= kth)  # every tie at the threshold is a candidate
    else:
        cand = np.arange(n)
    order = np.lexsort((cand, -scores[cand]))
    return cand[order[:k]]


def percentile_of(all_scores: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Share of the pool (in %) whose score is strictly below each chosen score."""
    sorted_scores = np.sort(all_scores)
    return 100.0 * np.searchsorted(sorted_scores, chosen, side="left") / max(len(all_scores), 1)


@dataclass
class Selection:
    """A selected batch: pool row indices with why each was chosen."""
    index: np.ndarray
    strategy: list[str]
    score: np.ndarray
    rank: np.ndarray
    percentile: np.ndarray
    audit: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def power_sample(scores: np.ndarray, k: int, rng: np.random.Generator, beta: float = 1.0) -> np.ndarray:
    """Stochastic power sampling: draw k without replacement with probability proportional to score^beta
    (Gumbel-top-k on beta*log(score))."""
    with np.errstate(divide="ignore"):
        logw = beta * np.log(np.maximum(scores, 0.0))
    g = rng.gumbel(size=len(scores))
    keys = np.where(np.isfinite(logw), logw + g, -np.inf)
    return top_k(keys, k)


def diversity_select(X_pool, scores: np.ndarray, k: int, rng: np.random.Generator, beta: int = 10,
                     svd_dims: int = 64) -> np.ndarray:
    """Margin pre-filter of beta*k candidates, k-means into k clusters, the most uncertain of each."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    cand = top_k(scores, beta * k)
    if len(cand) <= k:
        return cand
    Xc = X_pool[cand]
    dims = min(svd_dims, Xc.shape[1] - 1, len(cand) - 1)
    Z = TruncatedSVD(dims, random_state=int(rng.integers(1 << 30))).fit_transform(Xc) if dims >= 2 else Xc.toarray()
    km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(1 << 30))).fit(Z)
    chosen = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            best = members[top_k(scores[cand[members]], 1)[0]]
            chosen.append(cand[best])
    chosen = np.array(chosen, dtype=np.int64)
    if len(chosen) < k:  # empty clusters: fill with the next most uncertain candidates
        rest = np.setdiff1d(cand, chosen, assume_unique=True)
        chosen = np.concatenate([chosen, rest[top_k(scores[rest], k - len(chosen))]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def cal_scores(X_pool, p_pool: np.ndarray, X_lab, p_lab: np.ndarray, k_neighbours: int = 10,
               chunk: int = 2048) -> np.ndarray:
    """CAL: mean KL(p_neighbour || p_item) over the item's k nearest labelled neighbours (cosine)."""
    n_lab = X_lab.shape[0]
    if n_lab == 0:
        return np.zeros(X_pool.shape[0])
    kn = min(k_neighbours, n_lab)
    out = np.empty(X_pool.shape[0])
    XlT = X_lab.T.tocsc()
    logp_lab = np.log(np.clip(p_lab, 1e-12, 1))
    for start in range(0, X_pool.shape[0], chunk):
        sims = (X_pool[start:start + chunk] @ XlT)
        sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
        nn = np.argpartition(-sims, kn - 1, axis=1)[:, :kn]  # (c, kn)
        pi = np.clip(p_pool[start:start + chunk], 1e-12, 1)[:, None, :]  # (c, 1, k)
        pn = p_lab[nn]  # (c, kn, k)
        kl = np.sum(pn * (logp_lab[nn] - np.log(pi)), axis=2)  # (c, kn)
        out[start:start + chunk] = kl.mean(axis=1)
    return out


def check_strategy(name: str) -> str:
    if name not in STRATEGY_NAMES:
        raise LabelloopError(f"unknown strategy '{name}'; choose from {', '.join(STRATEGY_NAMES)}.")
    return name


def select_batch(strategy: str, n_pool: int, batch_size: int, *, rng: np.random.Generator,
                 audit_share: float = 0.0, scores: np.ndarray | None = None,
                 X_pool=None) -> Selection:
    """Pick ``batch_size`` pool rows: (1 - audit_share) by the strategy's scores, the rest at random
    from what is left, marked as audit. ``scores`` is required for every strategy but random."""
    check_strategy(strategy)
    if n_pool == 0:
        raise EmptyPoolError("the pool has no unlabelled items left to select.")
    batch_size = min(batch_size, n_pool)
    n_audit = int(round(audit_share * batch_size)) if strategy != "random" else 0
    n_main = batch_size - n_audit
    if strategy == "random":
        main = rng.choice(n_pool, size=n_main, replace=False)
        main_scores = np.full(n_main, np.nan)
        pct = np.full(n_main, np.nan)
    else:
        if scores is None or len(scores) != n_pool:
            raise ValueError("scores for the whole pool are required")
        if strategy == "power":
            main = power_sample(scores, n_main, rng)
        elif strategy == "diversity":
            main = diversity_select(X_pool, scores, n_main, rng)
        else:
            main = top_k(scores, n_main)
        main_scores = scores[main]
        pct = percentile_of(scores, main_scores)
    rest_mask = np.ones(n_pool, dtype=bool)
    rest_mask[main] = False
    rest = np.flatnonzero(rest_mask)
    audit = rng.choice(rest, size=min(n_audit, len(rest)), replace=False) if n_audit else np.zeros(0, dtype=np.int64)
    audit_scores = scores[audit] if scores is not None and len(audit) else np.full(len(audit), np.nan)
    audit_pct = percentile_of(scores, audit_scores) if scores is not None and len(audit) else np.full(len(audit), np.nan)
    index = np.concatenate([main, audit]).astype(np.int64)
    return Selection(
        index=index,
        strategy=[strategy] * len(main) + ["random"] * len(audit),
        score=np.concatenate([main_scores, audit_scores]),
        rank=np.concatenate([np.arange(1, len(main) + 1), np.zeros(len(audit), dtype=int)]),
        percentile=np.concatenate([pct, audit_pct]),
        audit=np.concatenate([np.zeros(len(main), dtype=bool), np.ones(len(audit), dtype=bool)]),
    )
