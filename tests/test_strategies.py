"""Uncertainty scores and selections against the plain reference formulas, ties included."""

import numpy as np
import pytest
import scipy.stats

from core.errors import LabelloopError
from core.strategies import (bald, cal_scores, diversity_select, entropy, least_confidence, margin, percentile_of,
                             power_sample, select_batch, top_k, vote_entropy)

P = np.array([
    [0.50, 0.30, 0.20],
    [0.40, 0.40, 0.20],   # a tie for the top
    [0.90, 0.05, 0.05],
    [1 / 3, 1 / 3, 1 / 3],
    [0.40, 0.40, 0.20],   # the same as row 1: a tie in every score
    [1.00, 0.00, 0.00],
])


def test_least_confidence_reference():
    assert np.allclose(least_confidence(P), [1 - max(r) for r in P])


def test_margin_reference():
    ref = [1 - (sorted(r)[-1] - sorted(r)[-2]) for r in P]
    assert np.allclose(margin(P), ref)
    assert margin(P)[1] == 1.0  # a tie between the top two is maximal uncertainty


def test_entropy_reference():
    assert np.allclose(entropy(P), [scipy.stats.entropy(r) for r in P])


def test_bald_reference():
    rng = np.random.default_rng(0)
    committee = rng.dirichlet(np.ones(3), size=(4, 5))  # (K, n, k)
    ref = []
    for i in range(5):
        mean = committee[:, i].mean(axis=0)
        ref.append(scipy.stats.entropy(mean) - np.mean([scipy.stats.entropy(committee[k, i]) for k in range(4)]))
    assert np.allclose(bald(committee), ref)
    same = np.stack([committee[0]] * 4)
    assert np.allclose(bald(same), 0)  # a unanimous committee carries no model uncertainty


def test_vote_entropy_reference():
    committee = np.array([[[0.9, 0.1], [0.6, 0.4]],
                          [[0.8, 0.2], [0.3, 0.7]],
                          [[0.7, 0.3], [0.2, 0.8]]])
    votes_item1 = [1 / 3, 2 / 3]
    assert np.allclose(vote_entropy(committee), [0.0, scipy.stats.entropy(votes_item1)])


def test_top_k_breaks_ties_by_lower_index():
    s = np.array([0.5, 0.9, 0.9, 0.1, 0.9, 0.5])
    assert top_k(s, 2).tolist() == [1, 2]
    assert top_k(s, 4).tolist() == [1, 2, 4, 0]
    assert top_k(s, 10).tolist() == [1, 2, 4, 0, 5, 3]
    assert top_k(margin(P), 2).tolist() == [1, 3]  # rows 1, 3 and 4 score 1.0; lower index wins


def test_percentile():
    assert percentile_of(np.array([1, 2, 3, 4.0]), np.array([4.0, 1.0])).tolist() == [75.0, 0.0]


def test_select_batch_reasons_and_audit_share():
    scores = np.linspace(0, 1, 1000)
    sel = select_batch("margin", 1000, 20, rng=np.random.default_rng(3), audit_share=0.1, scores=scores)
    assert len(sel) == 20 and sel.audit.sum() == 2
    main = sel.index[~sel.audit]
    assert sorted(main.tolist()) == list(range(982, 1000))  # the 18 highest scores
    assert sel.rank[~sel.audit].tolist() == list(range(1, 19))
    assert sel.strategy[:18] == ["margin"] * 18 and sel.strategy[18:] == ["random"] * 2
    assert not set(sel.index[sel.audit]) & set(main)
    assert sel.percentile[0] == pytest.approx(99.9)


def test_fixed_seed_reproduces_a_batch():
    scores = np.random.default_rng(1).random(5000)
    for strategy in ("margin", "power", "random"):
        a = select_batch(strategy, 5000, 50, rng=np.random.default_rng(42), audit_share=0.1, scores=scores)
        b = select_batch(strategy, 5000, 50, rng=np.random.default_rng(42), audit_share=0.1, scores=scores)
        assert a.index.tolist() == b.index.tolist()


def test_power_sampling_prefers_high_scores():
    scores = np.r_[np.full(100, 0.01), np.full(100, 1.0)]
    picks = np.concatenate([power_sample(scores, 10, np.random.default_rng(i)) for i in range(50)])
    assert (picks >= 100).mean() > 0.95
    assert len(set(power_sample(scores, 10, np.random.default_rng(0)).tolist())) == 10  # without replacement


def test_cal_matches_brute_force():
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize
    rng = np.random.default_rng(0)
    X_pool = sp.csr_matrix(normalize(rng.random((6, 5))))
    X_lab = sp.csr_matrix(normalize(rng.random((4, 5))))
    p_pool = rng.dirichlet(np.ones(3), 6)
    p_lab = rng.dirichlet(np.ones(3), 4)
    got = cal_scores(X_pool, p_pool, X_lab, p_lab, k_neighbours=2)
    sims = (X_pool @ X_lab.T).toarray()
    ref = []
    for i in range(6):
        nn = np.argsort(-sims[i])[:2]
        ref.append(np.mean([scipy.stats.entropy(p_lab[j], p_pool[i]) for j in nn]))
    assert np.allclose(got, ref)


def test_diversity_takes_one_item_per_cluster():
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    centers = np.eye(4)
    X = np.vstack([c + rng.normal(0, 0.01, (50, 4)) for c in centers])
    scores = rng.random(200) * 0.1 + 0.9  # all very uncertain: the plain top-k would ignore the clusters
    chosen = diversity_select(sp.csr_matrix(X), scores, 4, np.random.default_rng(1), beta=50)
    assert sorted(chosen // 50) == [0, 1, 2, 3]


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(LabelloopError, match="unknown strategy 'magic'"):
        select_batch("magic", 10, 2, rng=np.random.default_rng(0))
