"""Query strategies: score the unlabelled pool, pick a batch, say why.

Every score is "higher = more worth labelling". Scores are computed over the
pool in chunks with vectorised numpy and a running top-k, so a 1M-item pool
never needs a per-item Python loop. Ties are broken by pool order (lower row
first), so a batch is reproducible for a given seed.

References: margin / least confidence / entropy (Settles 2009); BALD (Houlsby et
al. 2011) here from a bootstrap committee; vote entropy QBC (Dagan & Engelson
1995); CAL (Margatina et al. 2021); diversity by k-means over a margin
pre-filter (cf. Zhdanov 2019); stochastic power sampling (Kirsch et al. 2023).

The probabilities a strategy scores are the model's raw ones (temperature 1), not the calibrated
ones the annotator sees: with several classes, temperature scaling changes which items have the
smallest margin, and margin on the temperature-scaled probabilities cost labels. Ablation on TREC-6
(bench/bench_margin_ablation.py, C=100, 3 repeats): every other labelloop piece left the curve mean
within 0.006 of a plain scikit-learn margin loop; calibrated probabilities alone took 0.028 off it.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from labelloop.core.util.errors import EmptyPoolError, LabelloopError, ModelError

CHUNK = 65_536
COMMITTEE_SIZE = 5


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


def diversity_select(
    X_pool, scores: np.ndarray, k: int, rng: np.random.Generator, beta: int = 10, svd_dims: int = 64
) -> np.ndarray:
    """Margin pre-filter of beta*k candidates, k-means into k clusters, the most uncertain of each."""
    cand = top_k(scores, beta * k)
    if len(cand) <= k:
        return cand
    return diversity_among(X_pool[cand], cand, scores[cand], k, rng, svd_dims)


def diversity_among(
    Xc, cand: np.ndarray, cand_scores: np.ndarray, k: int, rng: np.random.Generator, svd_dims: int = 64
) -> np.ndarray:
    """``diversity_select`` after its pre-filter: ``cand`` the candidates (best first; any numbering that
    follows the pool's order, such as an external pool's ordinals), ``Xc`` their rows, ``cand_scores``
    their scores. The chosen candidates, best first."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    cand = np.asarray(cand, dtype=np.int64)
    dims = min(svd_dims, Xc.shape[1] - 1, len(cand) - 1)
    Z = TruncatedSVD(dims, random_state=int(rng.integers(1 << 30))).fit_transform(Xc) if dims >= 2 else Xc.toarray()
    km = KMeans(n_clusters=k, n_init=1, random_state=int(rng.integers(1 << 30))).fit(Z)
    chosen = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if len(members):
            chosen.append(members[top_k(cand_scores[members], 1)[0]])
    chosen = np.array(chosen, dtype=np.int64)
    if len(chosen) < k:  # empty clusters: fill with the next most uncertain candidates (ties: lower first)
        rest = np.setdiff1d(np.arange(len(cand)), chosen, assume_unique=True)
        rest = rest[np.argsort(cand[rest], kind="stable")]
        chosen = np.concatenate([chosen, rest[top_k(cand_scores[rest], k - len(chosen))]])
    picked, sc = cand[chosen], cand_scores[chosen]
    return picked[np.lexsort((picked, -sc))]


def cal_scores(
    X_pool, p_pool: np.ndarray, X_lab, p_lab: np.ndarray, k_neighbours: int = 10, chunk: int = 2048
) -> np.ndarray:
    """CAL: mean KL(p_neighbour || p_item) over the item's k nearest labelled neighbours (cosine)."""
    n_lab = X_lab.shape[0]
    if n_lab == 0:
        return np.zeros(X_pool.shape[0])
    kn = min(k_neighbours, n_lab)
    out = np.empty(X_pool.shape[0])
    XlT = X_lab.T.tocsc() if hasattr(X_lab, "tocsc") else np.ascontiguousarray(X_lab.T)
    logp_lab = np.log(np.clip(p_lab, 1e-12, 1))
    for start in range(0, X_pool.shape[0], chunk):
        sims = X_pool[start : start + chunk] @ XlT
        sims = sims.toarray() if hasattr(sims, "toarray") else np.asarray(sims)
        nn = np.argpartition(-sims, kn - 1, axis=1)[:, :kn]  # (c, kn)
        pi = np.clip(p_pool[start : start + chunk], 1e-12, 1)[:, None, :]  # (c, 1, k)
        pn = p_lab[nn]  # (c, kn, k)
        kl = np.sum(pn * (logp_lab[nn] - np.log(pi)), axis=2)  # (c, kn)
        out[start : start + chunk] = kl.mean(axis=1)
    return out


def fit_committee(X, y: list[str], classes: list[str], model, rng, k: int = COMMITTEE_SIZE, class_weight=None) -> list:
    """K models on bootstrap resamples, sharing the main model's temperature."""
    from labelloop.core.engine.model import fit_model

    y_arr = np.array(y)
    members = []
    for _ in range(k):
        for _attempt in range(10):
            idx = rng.integers(0, len(y_arr), size=len(y_arr))
            if len(set(y_arr[idx])) == len(set(y_arr)):
                break
        m = fit_model(
            X[idx],
            list(y_arr[idx]),
            classes,
            calibration="none",
            class_weight=class_weight,
            seed=int(rng.integers(1 << 30)),
        )
        m.calibration, m.temperature_ = "temperature", model.temperature_
        if m.classes_ == model.classes_:  # a resample that lost a class cannot vote on it: leave it out
            members.append(m)
    if len(members) < 2:
        raise ModelError(
            "could not build a committee of two or more models with every class; label more items "
            "of the rare classes or use the margin strategy."
        )
    return members


# --- the registry: one object per strategy, used by the loop and by simulate alike -------------------


@dataclass
class Round:
    """What a strategy may use besides a chunk's probabilities, prepared once per round (``prepare``):
    the model, the labelled rows (features, labels, and their rows in the neighbour space), the rng."""

    model: object
    X_lab: object = None
    y_lab: list = field(default_factory=list)
    N_lab: object = None
    classes: list = field(default_factory=list)
    rng: np.random.Generator | None = None
    class_weight: str | None = None
    multi_label: bool = False
    committee: list | None = None
    p_lab: np.ndarray | None = None


class QueryStrategy(abc.ABC):
    """A query strategy (after small-text's ``QueryStrategy``): a stable ``name``, per-round
    preparation, a vectorised ``score`` of pool chunks (higher = more worth labelling) and ``pick``,
    which turns the pool's scores into the batch's rows."""

    name: str = ""
    multi_label = True  # available for multi-label projects
    uses_scores = True  # False: the picks ignore the scores (simulate skips computing them)

    def __str__(self) -> str:
        return self.name

    def prepare(self, rnd: Round) -> Round:
        """Per-round work before scoring (a committee, the labelled neighbours); returns ``rnd``."""
        return rnd

    def score(self, p: np.ndarray, Xc, Nc, rnd: Round) -> np.ndarray:
        """Scores of one chunk: ``p`` its calibrated probabilities, ``Xc`` its features, ``Nc`` its rows
        in the neighbour space. The default is margin (uncertainty strategies override it)."""
        return (ml_margin if rnd.multi_label else margin)(p)

    def pick(self, scores: np.ndarray, k: int, rng: np.random.Generator, X_pool=None) -> np.ndarray:
        """The ``k`` pool rows to label, best first."""
        return top_k(scores, k)


class Uncertainty(QueryStrategy):
    """Least confidence, margin or entropy of the calibrated probabilities."""

    def __init__(self, name: str, single, multi):
        self.name, self._single, self._multi = name, single, multi

    def score(self, p, Xc, Nc, rnd):
        return (self._multi if rnd.multi_label else self._single)(p)


class RandomSampling(QueryStrategy):
    """Uniform draws. Its scores (margin) only fill the "why" of the items it picks."""

    name = "random"
    uses_scores = False

    def pick(self, scores, k, rng, X_pool=None):
        return rng.choice(len(scores), size=k, replace=False)


class Committee(QueryStrategy):
    """BALD (mutual information) or vote entropy (QBC) over a bootstrap committee."""

    multi_label = False

    def __init__(self, name: str, measure):
        self.name, self._measure = name, measure

    def prepare(self, rnd):
        rnd.committee = fit_committee(
            rnd.X_lab, rnd.y_lab, rnd.classes, rnd.model, rnd.rng, class_weight=rnd.class_weight
        )
        return rnd

    def score(self, p, Xc, Nc, rnd):
        return self._measure(np.stack([m.predict_proba(Xc) for m in rnd.committee]))


class ContrastiveAL(QueryStrategy):
    """CAL: how far an item's prediction is from its labelled nearest neighbours' (in the neighbour
    space: embeddings when loaded)."""

    name = "cal"
    multi_label = False

    def prepare(self, rnd):
        rnd.p_lab = rnd.model.uncalibrated_proba(rnd.X_lab)  # the same space as the candidates' p
        return rnd

    def score(self, p, Xc, Nc, rnd):
        return cal_scores(Nc, p, rnd.N_lab, rnd.p_lab)


class DiversityMargin(QueryStrategy):
    """Margin pre-filter, k-means in the neighbour space, the most uncertain item of each cluster."""

    name = "diversity"

    def pick(self, scores, k, rng, X_pool=None):
        return diversity_select(X_pool, scores, k, rng)


class PowerMargin(QueryStrategy):
    """Stochastic power sampling on margin scores."""

    name = "power"

    def pick(self, scores, k, rng, X_pool=None):
        return power_sample(scores, k, rng)


class AutoStrategy(QueryStrategy):
    """A bandit over margin, entropy, diversity, CAL and random (core/engine/auto.py): the loop splits
    each batch among them by its shares. Its own scores (margin) rank the pool for the "why"."""

    name = "auto"
    multi_label = False


STRATEGIES: dict[str, QueryStrategy] = {
    s.name: s
    for s in (
        RandomSampling(),
        Uncertainty("least_confidence", least_confidence, ml_least_confidence),
        Uncertainty("margin", margin, ml_margin),
        Uncertainty("entropy", entropy, ml_entropy),
        Committee("bald", bald),
        Committee("qbc", vote_entropy),
        ContrastiveAL(),
        DiversityMargin(),
        PowerMargin(),
        AutoStrategy(),
    )
}
"""Every strategy by its stable name (the names of ``[strategy] name`` and ``simulate --strategies``)."""


def get_strategy(name, *, multi_label: bool = False) -> QueryStrategy:
    """The strategy called ``name`` (or ``name`` itself when it is one); an error naming the choices."""
    if isinstance(name, QueryStrategy):
        strat = name
    elif name in STRATEGIES:
        strat = STRATEGIES[name]
    else:
        raise LabelloopError(f"unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}.")
    if multi_label and not strat.multi_label:
        raise LabelloopError(
            f"strategy '{strat}' is not available for multi-label projects; use one of "
            f"{', '.join(n for n, s in STRATEGIES.items() if s.multi_label)}."
        )
    return strat


def n_audit_for(batch_size: int, audit_share: float) -> int:
    return int(round(audit_share * batch_size))


def audit_positions(batch_size: int, n_audit: int, rng: np.random.Generator) -> np.ndarray:
    """Where the audit items stand in a batch: one at a random place inside each of ``n_audit`` equal
    stretches of the batch. Any prefix an annotator reaches before a retrain replaces the batch then
    holds close to its share of audit items (at the end of the batch they were never reached)."""
    if n_audit <= 0:
        return np.zeros(0, dtype=np.int64)
    edges = np.linspace(0, batch_size, n_audit + 1)
    pos = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        lo_i, hi_i = int(np.ceil(lo)), max(int(np.ceil(hi)), int(np.ceil(lo)) + 1)
        pos.append(int(rng.integers(lo_i, min(hi_i, batch_size))))
    pos = np.array(sorted(set(pos)), dtype=np.int64)
    if len(pos) < n_audit:  # (only for batches about as small as their audit share) fill free places
        free = np.setdiff1d(np.arange(batch_size), pos)
        pos = np.sort(np.concatenate([pos, rng.choice(free, n_audit - len(pos), replace=False)]))
    return pos


def assemble_batch(
    main: np.ndarray,
    main_strategy: list[str],
    main_scores: np.ndarray,
    main_pct: np.ndarray,
    n_pool: int,
    n_audit: int,
    rng: np.random.Generator,
    *,
    scores: np.ndarray | None = None,
    carry_audit: np.ndarray | None = None,
) -> Selection:
    """The batch: the strategy's picks in rank order, with ``n_audit`` random-audit items spread through
    it. Audit items still unlabelled from the previous batch (``carry_audit``) are kept first, so a
    retrain never throws away the control arm's draws; only the rest are drawn anew."""
    main = np.asarray(main, dtype=np.int64)
    carry = np.zeros(0, dtype=np.int64) if carry_audit is None else np.asarray(carry_audit, dtype=np.int64)
    carry = carry[~np.isin(carry, main)][:n_audit]
    taken = np.zeros(n_pool, dtype=bool)
    taken[main] = True
    taken[carry] = True
    rest = np.flatnonzero(~taken)
    n_new = min(max(n_audit - len(carry), 0), len(rest))
    new = rng.choice(rest, size=n_new, replace=False) if n_new else np.zeros(0, dtype=np.int64)
    audit = np.concatenate([carry, new]).astype(np.int64)
    if scores is not None and len(audit):
        audit_scores, audit_pct = scores[audit], percentile_of(scores, scores[audit])
    else:
        audit_scores = audit_pct = np.full(len(audit), np.nan)
    return place_audit(main, main_strategy, main_scores, main_pct, audit, audit_scores, audit_pct, rng)


def place_audit(main, main_strategy, main_scores, main_pct, audit, audit_scores, audit_pct, rng) -> Selection:
    """The batch: the picks in rank order, the audit items spread through it (``audit_positions``)."""
    size = len(main) + len(audit)
    is_audit = np.zeros(size, dtype=bool)
    is_audit[audit_positions(size, len(audit), rng)] = True
    index = np.empty(size, dtype=np.int64)
    index[~is_audit], index[is_audit] = main, audit
    strat = np.empty(size, dtype=object)
    strat[~is_audit], strat[is_audit] = list(main_strategy), "random"
    score = np.empty(size)
    score[~is_audit], score[is_audit] = main_scores, audit_scores
    pct = np.empty(size)
    pct[~is_audit], pct[is_audit] = main_pct, audit_pct
    rank = np.zeros(size, dtype=np.int64)
    rank[~is_audit] = np.arange(1, len(main) + 1)
    return Selection(index=index, strategy=list(strat), score=score, rank=rank, percentile=pct, audit=is_audit)


def select_batch(
    strategy: str | QueryStrategy,
    n_pool: int,
    batch_size: int,
    *,
    rng: np.random.Generator,
    audit_share: float = 0.0,
    scores: np.ndarray | None = None,
    X_pool=None,
    carry_audit: np.ndarray | None = None,
) -> Selection:
    """Pick ``batch_size`` pool rows: (1 - audit_share) by the strategy's scores, the rest at random
    from what is left, marked as audit and spread through the batch (``assemble_batch``).
    ``scores`` is required for every strategy but random."""
    strat = get_strategy(strategy)
    if n_pool == 0:
        raise EmptyPoolError("the pool has no unlabelled items left to select.")
    batch_size = min(batch_size, n_pool)
    n_audit = n_audit_for(batch_size, audit_share) if strat.uses_scores else 0
    # the previous batch's unlabelled audit items, in their order, at most this batch's audit share
    carry = np.array(
        [c for c in dict.fromkeys(int(x) for x in (carry_audit if carry_audit is not None else [])) if 0 <= c < n_pool][
            :n_audit
        ],
        dtype=np.int64,
    )
    n_main = batch_size - n_audit
    if not strat.uses_scores:
        main = strat.pick(np.zeros(n_pool), n_main, rng)
        main_scores = np.full(n_main, np.nan)
        pct = np.full(n_main, np.nan)
    else:
        if scores is None or len(scores) != n_pool:
            raise ValueError("scores for the whole pool are required")
        pick_scores = scores
        if len(carry):  # the carried audit items are not the strategy's to pick
            pick_scores = scores.astype(np.float64, copy=True)
            pick_scores[carry] = -np.inf
        main = strat.pick(pick_scores, n_main, rng, X_pool)
        main_scores = scores[main]
        pct = percentile_of(scores, main_scores)
    return assemble_batch(
        main, [strat.name] * len(main), main_scores, pct, n_pool, n_audit, rng, scores=scores, carry_audit=carry
    )
