"""Uncertainty scores and selections against the plain reference formulas, ties included."""

import numpy as np
import pytest
import scipy.stats

from labelloop.core.engine.strategies import (
    bald,
    cal_scores,
    diversity_select,
    entropy,
    least_confidence,
    margin,
    percentile_of,
    power_sample,
    select_batch,
    top_k,
    vote_entropy,
)
from labelloop.core.util.errors import LabelloopError

P = np.array(
    [
        [0.50, 0.30, 0.20],
        [0.40, 0.40, 0.20],  # a tie for the top
        [0.90, 0.05, 0.05],
        [1 / 3, 1 / 3, 1 / 3],
        [0.40, 0.40, 0.20],  # the same as row 1: a tie in every score
        [1.00, 0.00, 0.00],
    ]
)


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
    committee = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.8, 0.2], [0.3, 0.7]], [[0.7, 0.3], [0.2, 0.8]]])
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
    assert [s for s, a in zip(sel.strategy, sel.audit) if not a] == ["margin"] * 18
    assert [s for s, a in zip(sel.strategy, sel.audit) if a] == ["random"] * 2
    assert not set(sel.index[sel.audit]) & set(main)
    first_main = int(np.flatnonzero(~sel.audit)[0])
    assert sel.percentile[first_main] == pytest.approx(99.9)


def test_audit_items_are_spread_through_the_batch():
    """One audit item in each tenth of a 50-item batch, at a random place in it: the first 25 positions
    always hold two or three of the five, whatever the seed (they used to stand at positions 45-49)."""
    scores = np.random.default_rng(0).random(2000)
    seen = set()
    for seed in range(200):
        sel = select_batch("margin", 2000, 50, rng=np.random.default_rng(seed), audit_share=0.1, scores=scores)
        pos = np.flatnonzero(sel.audit)
        assert len(pos) == 5
        assert [p // 10 for p in pos] == [0, 1, 2, 3, 4]
        assert 2 <= int(sel.audit[:25].sum()) <= 3
        seen.update(pos.tolist())
    assert len(seen) == 50  # every position can hold an audit item


def test_unlabelled_audit_items_are_carried_into_the_next_batch():
    scores = np.linspace(0, 1, 1000)
    carry = np.array([5, 17, 3])  # audit items of the previous batch nobody reached
    sel = select_batch(
        "margin", 1000, 50, rng=np.random.default_rng(1), audit_share=0.1, scores=scores, carry_audit=carry
    )
    audit = sel.index[sel.audit].tolist()
    assert len(audit) == 5 and {5, 17, 3} <= set(audit)  # kept, and only two drawn anew
    assert not set(audit) & set(sel.index[~sel.audit].tolist())
    # more carried than this batch's share: the share wins, so audit decisions converge to it
    sel = select_batch(
        "margin",
        1000,
        20,
        rng=np.random.default_rng(1),
        audit_share=0.1,
        scores=scores,
        carry_audit=np.array([1, 2, 3, 4, 5]),
    )
    assert sorted(sel.index[sel.audit].tolist()) == [1, 2]


@pytest.mark.parametrize(
    "batch,every,share", [(50, 25, 0.1), (50, 10, 0.1), (20, 25, 0.2), (100, 7, 0.05), (10, 3, 0.1)]
)
def test_audit_share_of_decisions_converges_whatever_the_cadence(batch, every, share):
    """Simulate the loop's queue: label `every` items from the front, retrain (new batch, carrying the
    unlabelled audit items), again and again. The share of decisions on audit items approaches
    audit_share for any batch size and retrain cadence."""
    rng = np.random.default_rng(7)
    n_pool = 20_000
    alive = np.ones(n_pool, dtype=bool)
    carry_ids: list[int] = []
    audit_decisions = decisions = 0
    for _round in range(400):
        cand = np.flatnonzero(alive)
        pos_of = {int(c): i for i, c in enumerate(cand)}
        sel = select_batch(
            "margin",
            len(cand),
            batch,
            rng=rng,
            audit_share=share,
            scores=rng.random(len(cand)),
            carry_audit=np.array([pos_of[c] for c in carry_ids if c in pos_of], dtype=np.int64),
        )
        ids = cand[sel.index]
        done = min(every, len(ids))
        alive[ids[:done]] = False
        audit_decisions += int(sel.audit[:done].sum())
        decisions += done
        carry_ids = [int(i) for i, a in zip(ids[done:], sel.audit[done:]) if a]
    assert abs(audit_decisions / decisions - share) < 0.25 * share + 0.005


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


def test_one_registry_names_every_strategy_for_the_loop_the_simulator_and_the_config():
    from labelloop.core.config import STRATEGIES as CONFIG_CHOICES
    from labelloop.core.engine.strategies import STRATEGIES, QueryStrategy, get_strategy
    from labelloop.core.util.errors import LabelloopError

    assert tuple(STRATEGIES) == CONFIG_CHOICES
    for name, s in STRATEGIES.items():
        assert isinstance(s, QueryStrategy) and str(s) == s.name == name
    assert get_strategy("margin") is STRATEGIES["margin"]
    with pytest.raises(LabelloopError, match="not available for multi-label"):
        get_strategy("bald", multi_label=True)
    # the loop's scores and the simulator's are the same function of the probabilities
    p = np.random.default_rng(0).dirichlet(np.ones(4), size=50)
    from labelloop.core.engine.strategies import Round

    for name in ("margin", "entropy", "least_confidence"):
        assert np.array_equal(
            STRATEGIES[name].score(p, None, None, Round(model=None)),
            {"margin": margin, "entropy": entropy, "least_confidence": least_confidence}[name](p),
        )
