"""``strategy = "auto"`` (core/engine/auto.py, core/loop/autoround.py): the bandit's shares follow the
evidence of the random-audit labels, the audit share is untouched, and the workstation's loop and
simulate run the same policy."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.core.engine import auto
from labelloop.core.engine.model import fit_model
from labelloop.core.engine.strategies import n_audit_for
from labelloop.core.loop.autoround import next_state, simulate_pick

CLASSES = ["a", "b"]


def _zone_pool(n=3000, seed=0):
    """y = (x0 > 0) outside a band |x0| < 0.6 and a coin flip inside it: there the labels are independent
    of the features, and that band is exactly where the model is least certain."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    coin = rng.random(n) < 0.5
    y = np.where(np.where(np.abs(X[:, 0]) > 0.6, X[:, 0] > 0, coin), "a", "b").astype(object)
    return X, y


def _collect(X, y, rounds, batch, seed, state=None, audit_share=0.2):
    """Label ``rounds`` batches by the auto policy with the given (fixed, or learnt when None) shares:
    (labelled rows, each row's arm, each row's audit flag, the final state)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    lab = [int(i) for i in rng.choice(n, 40, replace=False)]
    arms, audit = [None] * 40, [False] * 40
    learnt = state is None
    st = state
    for r in range(rounds):
        model = fit_model(X[lab], list(y[lab]), CLASSES, C=1.0, held_out="alo", seed=r)
        if learnt:
            st = next_state(st, X[lab], list(y[lab]), arms, audit, CLASSES, 1.0)
        cand = np.setdiff1d(np.arange(n), lab)
        chosen, names, is_audit = simulate_pick(st, model, X, cand, lab, batch, audit_share, rng)
        lab += [int(i) for i in chosen]
        arms += [auto.arm_of(x) for x in names]
        audit += [bool(a) for a in is_audit]
    return lab, arms, audit, st


def _labelled_by_arms(seed: int):
    """A linear two-class pool and 6 batches of 60 labelled by the auto policy with equal shares:
    (X, y, labelled rows, each row's arm, each row's audit flag, a held-out test split)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(4000, 40))
    y = np.where(X[:, :8].sum(axis=1) > 0, "a", "b").astype(object)  # many features matter: labels count
    equal = dict(auto.initial_state(), shares=auto.shares({a: 0.0 for a in auto.ARMS}))
    lab, arms, audit, _ = _collect(X[:2000], y[:2000], 6, 100, seed=seed, state=equal)
    return X, y, lab, arms, audit, (X[2000:], y[2000:])


def _after_retrains(X, y_seen, lab, arms, audit, test, retrains=3):
    """The bandit after ``retrains`` retrains on the same labels: the evidence is re-measured each time,
    as the loop does, and the shares leave the prior only as the evidence keeps saying the same."""
    st = auto.initial_state()
    for _ in range(retrains):
        st = next_state(st, X[lab], list(y_seen), arms, audit, CLASSES, 1.0, held_out=test)
    return st


def _coin_flips(y_seen: np.ndarray, arms: list, which, seed: int) -> np.ndarray:
    """The labels of the rows chosen by the arms in ``which`` replaced by coin flips: labels
    independent of the features, as they are where uncertainty is uninformative."""
    rng = np.random.default_rng(seed)
    out = y_seen.copy()
    for i, a in enumerate(arms):
        if a in which:
            out[i] = "a" if rng.random() < 0.5 else "b"
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_shares_move_toward_the_arm_whose_labels_are_worth_most(seed):
    """One strategy clearly best: only entropy's labels carry the classes, every other arm's are coin
    flips. From the prior (margin and random ahead) the bandit gives entropy the largest share within
    three retrains, well above its start, and every arm keeps the exploration floor."""
    X, y, lab, arms, audit, test = _labelled_by_arms(seed)
    others = [a for a in auto.ARMS if a != "entropy"]
    y_seen = _coin_flips(y[lab], arms, others, seed)
    st = _after_retrains(X, y_seen, lab, arms, audit, test)
    assert st["evidence"] == sum(audit) + len(test[1])
    assert st["shares"]["entropy"] >= max(st["shares"].values()) - 1e-12, st["shares"]
    assert st["shares"]["entropy"] > 2 * auto.initial_state()["shares"]["entropy"]
    assert abs(sum(st["shares"].values()) - 1) < 1e-9
    assert min(st["shares"].values()) >= auto.GAMMA / len(auto.ARMS) - 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_shares_move_toward_random_where_uncertainty_is_uninformative(seed):
    """Uncertainty uninformative: the labels of the items margin, entropy and diversity choose are
    independent of the features (coin flips); random's are the pool's. Within three retrains random
    has a larger share than it started with and than each uncertainty arm, and margin, which started
    level with random, ends below its start."""
    X, y, lab, arms, audit, test = _labelled_by_arms(seed)
    y_seen = _coin_flips(y[lab], arms, ("margin", "entropy", "diversity"), seed)
    st = _after_retrains(X, y_seen, lab, arms, audit, test)
    start = auto.initial_state()["shares"]
    sh = st["shares"]
    assert sh["random"] > start["random"], sh
    assert all(sh["random"] > sh[a] for a in ("margin", "entropy", "diversity")), sh
    assert sh["margin"] < start["margin"], sh


def test_without_the_test_split_the_audit_labels_alone_are_the_evidence():
    X, y, lab, arms, audit, _test = _labelled_by_arms(4)
    st = next_state(auto.initial_state(), X[lab], list(y[lab]), arms, audit, CLASSES, 1.0)
    assert st["evidence"] == sum(audit) >= auto.MIN_EVIDENCE
    assert st["updates"] == 1 and set(st["values"]) == set(auto.ARMS)


def test_the_audit_share_is_the_same_whatever_the_shares():
    """The random-audit draws are taken before the arms split the rest: their count is the configured
    share of every batch, however the bandit leans."""
    X, y = _zone_pool(n=1500, seed=3)
    rng = np.random.default_rng(0)
    lab = [int(i) for i in rng.choice(len(y), 60, replace=False)]
    model = fit_model(X[lab], list(y[lab]), CLASSES, C=1.0, held_out="alo")
    cand = np.setdiff1d(np.arange(len(y)), lab)
    leaning = [auto.initial_state()]
    for arm in auto.ARMS:
        st = auto.initial_state()
        st["shares"] = auto.shares({a: (8.0 if a == arm else 0.0) for a in auto.ARMS})
        leaning.append(st)
    for st in leaning:
        for k in (10, 50, 101):
            chosen, names, is_audit = simulate_pick(st, model, X, cand, lab, k, 0.1, rng)
            assert len(chosen) == k == len(set(chosen.tolist()))
            assert int(is_audit.sum()) == n_audit_for(k, 0.1)
            assert all(auto.arm_of(nm) in auto.ARMS for nm, a in zip(names, is_audit) if not a)
            counts = {a: sum(auto.arm_of(nm) == a for nm in names) for a in auto.ARMS}
            assert sum(counts.values()) == k - n_audit_for(k, 0.1)


def test_allocation_follows_the_shares_and_fills_the_batch():
    rng = np.random.default_rng(0)
    share = auto.shares({"margin": 2.0, "entropy": 0.0, "diversity": 0.0, "cal": -1.0, "random": 0.5})
    for n in (0, 1, 7, 45, 200):
        c = auto.allocate(share, n, rng)
        assert sum(c.values()) == n
        for a in share:
            assert abs(c[a] - share[a] * n) < 1.0 + 1e-9


def test_the_shares_stay_until_there_is_enough_evidence():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = list(np.where(X[:, 0] > 0, "a", "b"))
    arms = [auto.ARMS[i % 5] for i in range(200)]
    audit = [i < auto.MIN_EVIDENCE - 1 for i in range(200)]
    st = next_state(None, X, y, arms, audit, CLASSES, 1.0)
    assert st["shares"] == auto.initial_state()["shares"]
    assert "random-audit labels so far" in st["note"]


def test_the_workstation_loop_splits_batches_by_arm_and_stores_the_shares_with_the_model(tmp_path):
    """strategy = "auto" in a project: every queued item names the arm that chose it (or is a random-audit
    draw, in the configured share), the shares are stored with each model version and move once the
    arms' labels are in, and status, the measurement and the report carry them."""
    from labelloop.core.api.service import Service
    from labelloop.core.loop.al_round import queued_items, train_and_queue
    from labelloop.core.store import reports, rounds
    from labelloop.core.store.project import Project
    from labelloop.core.text.report import shares_cell
    from labelloop.core.text.status import format_readiness, format_status
    from tests.conftest import run_cli
    from tests.tui_helpers import TRUTH, build_project

    d = build_project(tmp_path / "p", cfg_edits=(('name = "margin"', 'name = "auto"'),))
    with Project.open(d) as p:
        v1 = rounds.latest_trained_version(p.store)
        b1 = rounds.model_metrics(p.store, v1)["bandit"]
        assert set(b1["shares"]) == set(auto.ARMS) and b1["updates"] == 0  # no arm has labels yet
        for _round in range(2):
            q = queued_items(p)
            arms = [auto.arm_of(it["strategy"]) for it in q if not it["audit"]]
            assert all(a in auto.ARMS for a in arms), [it["strategy"] for it in q]
            assert sum(it["audit"] for it in q) == n_audit_for(len(q), p.config.audit_share)
            assert all(it["strategy"] == "random" for it in q if it["audit"])
            for it in q:
                p.store.append_event(
                    it["item_id"],
                    "label",
                    "ann",
                    via="key",
                    labels=[TRUTH[it["item_id"]]],
                    batch_id=it["batch_id"],
                    strategy=it["strategy"],
                    audit=it["audit"],
                )
            train_and_queue(p, seed=3 + _round)
        v3 = rounds.latest_trained_version(p.store)
        b3 = rounds.model_metrics(p.store, v3)["bandit"]
        assert b3["updates"] >= 1 and b3["evidence"] >= 150  # the test split and the audit labels
        assert b3["shares"] != b1["shares"] and abs(sum(b3["shares"].values()) - 1) < 1e-9
        assert sum(b3["labels"].values()) == sum(1 for _o, _l, st, a in rounds.labelled(p.store) if auto.arm_of(st))
        last = reports.measurements(p.store)[-1]
        assert last["auto_shares"] == pytest.approx(b3["shares"])
    svc = Service(d, compute="thread")
    try:
        text = format_status(svc.handle("local", "status", {}))
        check = format_readiness(svc.handle("local", "check", {}))
    finally:
        svc.close()
    assert "strategy auto: shares " + auto.shares_line(b3) in text
    # the live verdicts at 90/95/98% (the arms at equal budget, as far as the audit arm reaches)
    assert "AL against the random-audit arm at several targets" in check
    for frac in ("90%", "95%", "98%"):
        assert f"  {frac} of the current accuracy (" in check
    assert "the random-audit arm's size" in check
    r = run_cli("report", str(d), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Strategy auto: the bandit&#x27;s shares" in page or "Strategy auto: the bandit's shares" in page
    assert f"<td>v{v3}</td><td>{shares_cell(b3['shares'])}</td>" in page
    assert shares_cell(b3["shares"]) in (tmp_path / "rep" / "measurements.csv").read_text()
    assert "AL against the random-audit arm at several targets" in page


async def test_the_workstation_shows_which_arm_chose_the_item_and_the_shares(tmp_path):
    """At 80x24 with strategy auto: the why pane names the arm and its share (or the random audit), and
    the metrics pane gives the shares stored with the model version."""
    from labelloop.tui.app import LabelApp
    from tests.tui_helpers import build_project

    d = build_project(tmp_path / "p", cfg_edits=(('name = "margin"', 'name = "auto"'),))
    app = LabelApp(d, actor="alice", retrain_in_process=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        item = app.ws.current()
        why = str(app.query_one("#why").render())
        if item.audit:
            assert "random audit" in why
        else:
            arm = auto.arm_of(item.strategy)
            share = auto.initial_state()["shares"][arm]
            assert f"why: auto: {arm} (share {share:.2f})" in why.replace("\n", " ")
        await pilot.press("m")
        for _ in range(100):
            await pilot.pause(0.1)
            if "computing" not in str(app.screen.query_one("#numbers").render()):
                break
        numbers = str(app.screen.query_one("#numbers").render())
        start = auto.initial_state()["shares"]["random"]
        assert "strategy auto: shares " in numbers and f"random {start:.2f}" in numbers
        await pilot.press("escape")
    app.ws.close()


def test_cal_ranks_a_uniform_sample_of_a_large_pool_with_the_same_scores():
    """CAL's cost grows with pool x labels: above CAL_CANDIDATES it scores a uniform sample, each with
    the score it would have had over the whole pool; the other arms score every candidate."""
    from labelloop.core.loop import autoround

    X, y = _zone_pool(n=1200, seed=5)
    lab = np.arange(0, 1200, 7)
    model = fit_model(X[lab], list(y[lab]), CLASSES, C=1.0, held_out="alo")
    rows = np.setdiff1d(np.arange(1200), lab)
    full, _ = autoround.arm_scores(model, X, rows, X_lab=X[lab], N_lab=X[lab])
    assert autoround.cal_sample(autoround.CAL_CANDIDATES, np.random.default_rng(0)) is None
    sample = np.sort(np.random.default_rng(1).choice(len(rows), 100, replace=False))
    part, _ = autoround.arm_scores(model, X, rows, X_lab=X[lab], N_lab=X[lab], cal_rows=sample)
    assert np.isfinite(part["cal"]).sum() == 100
    np.testing.assert_allclose(part["cal"][sample], full["cal"][sample])
    np.testing.assert_array_equal(part["margin"], full["margin"])
    big = autoround.cal_sample(10 * autoround.CAL_CANDIDATES, np.random.default_rng(2))
    assert len(big) == autoround.CAL_CANDIDATES == len(set(big.tolist())) and np.all(np.diff(big) > 0)
