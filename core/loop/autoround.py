"""One round of ``strategy = "auto"`` (core/engine/auto.py), shared by the workstation's loop and
``simulate``: value the arms' latest labels on the random-audit labels, move the shares, score the
pool once for every arm, and split the batch among the arms."""

from __future__ import annotations

import numpy as np

from labelloop.core.engine import auto
from labelloop.core.engine.strategies import cal_scores, diversity_select, entropy, margin

SCORE_CHUNK = 100_000
# CAL compares each candidate with its labelled neighbours: its cost grows with pool x labels (on 195,000
# candidates and 5,000 labels it took 158 s where margin took 1.4). Its arm ranks a uniform sample of this
# many candidates (bench/bench_engine.py --also-auto).
CAL_CANDIDATES = 5_000


def cal_sample(n: int, rng) -> np.ndarray | None:
    """The candidates (positions) CAL scores this round: all of them up to CAL_CANDIDATES, else a
    uniform sample of that many (sorted)."""
    if n <= CAL_CANDIDATES:
        return None
    return np.sort(rng.choice(n, size=CAL_CANDIDATES, replace=False))


def next_state(
    prev: dict | None, X_lab, y: list, arms: list, audit: list, classes, C: float, class_weight=None, held_out=None
) -> dict:
    """The bandit after a retrain on the labelled rows ``X_lab``/``y``, ``arms`` the arm that chose each
    (None: not auto's), ``audit`` whether each is a random-audit label (evidence); ``held_out``: (X, y)
    of the project's test split (evidence never trained on)."""
    state = prev if prev else auto.initial_state()
    values, labels, n_ev = auto.arm_values(
        X_lab, y, arms, np.asarray(audit, dtype=bool), classes, C, class_weight=class_weight, held_out=held_out
    )
    return auto.update(state, values, labels, n_ev, len(y))


def arm_scores(model, X, rows: np.ndarray, *, N=None, X_lab=None, N_lab=None, chunk: int = SCORE_CHUNK, cal_rows=None):
    """(scores per scoring arm, calibrated probabilities) of the pool ``rows`` in one pass: margin and
    entropy of the raw probabilities, CAL against the labelled rows (in the neighbour space ``N``) for
    the positions ``cal_rows`` (``cal_sample``; None: all), the others -inf for CAL."""
    n = len(rows)
    probs = np.empty((n, len(model.classes_)), dtype=np.float32)
    raw_all = np.empty((n, len(model.classes_)))
    out = {"margin": np.empty(n), "entropy": np.empty(n), "cal": np.zeros(n)}
    for start in range(0, n, chunk):
        part = rows[start : start + chunk]
        Xc = X.lazy(part) if hasattr(X, "lazy") else X[part]
        p, raw = model.proba_pair(Xc)
        probs[start : start + chunk] = p
        raw_all[start : start + chunk] = raw
        out["margin"][start : start + chunk] = margin(raw)
        out["entropy"][start : start + chunk] = entropy(raw)
    if X_lab is not None and X_lab.shape[0]:
        p_lab = model.uncalibrated_proba(X_lab)
        at = np.arange(n) if cal_rows is None else np.asarray(cal_rows, dtype=np.int64)
        if cal_rows is not None:
            out["cal"][:] = -np.inf
        for start in range(0, len(at), chunk):
            pos = at[start : start + chunk]
            Nc = (X.lazy(rows[pos]) if hasattr(X, "lazy") else X[rows[pos]]) if N is None else N[rows[pos]]
            out["cal"][pos] = cal_scores(Nc, raw_all[pos], N_lab, p_lab)
    return out, probs


def split_batch(state: dict, scores: dict, n_main: int, rng, *, X_neighbours=None, blocked=None):
    """(rows, each row's arm, each row's score under its arm, each row's percentile under its arm): the
    ``n_main`` picks of the arms by the state's shares. ``X_neighbours``: the candidates' rows for the
    diversity variant's clusters."""
    from labelloop.core.engine.strategies import percentile_of

    share = state.get("shares") or auto.shares(auto.prior())
    counts = auto.allocate(share, n_main, rng)
    n_pool = len(next(iter(scores.values())))

    def diversity(s, k):
        if X_neighbours is None:
            return np.argsort(-s, kind="stable")[:k]
        finite = np.isfinite(s)
        idx = np.flatnonzero(finite)
        return idx[diversity_select(X_neighbours[idx], s[idx], k, rng)]

    full = dict(scores)
    full["diversity"] = scores["margin"]
    rows, arms = auto.pick_by_arms(counts, full, n_pool, rng, blocked=blocked, diversity_pick=diversity)
    ranked = {a: v[np.isfinite(v)] for a, v in full.items()}  # CAL ranks its sample only
    arm_score = np.array([np.nan if a == "random" else full[a][r] for r, a in zip(rows, arms)])
    pct = np.array(
        [
            np.nan if a == "random" else float(percentile_of(ranked[a], np.array([full[a][r]]))[0])
            for r, a in zip(rows, arms)
        ]
    )
    names = [auto.arm_label(a, share[a]) for a in arms]
    return rows, names, arm_score, pct


def simulate_pick(state: dict, model, X_pool, cand: np.ndarray, labelled: list, k: int, audit_share: float, rng):
    """``simulate``'s auto arm: (rows picked, their arm names, which are random-audit draws)."""
    from labelloop.core.engine.strategies import n_audit_for

    n_audit = min(n_audit_for(k, audit_share), len(cand))
    audit_idx = rng.choice(len(cand), size=n_audit, replace=False) if n_audit else np.zeros(0, dtype=np.int64)
    Xc = X_pool[cand]
    scores, _ = arm_scores(
        model,
        Xc,
        np.arange(len(cand)),
        X_lab=X_pool[labelled],
        N_lab=X_pool[labelled],
        cal_rows=cal_sample(len(cand), rng),
    )
    rows, names, _s, _p = split_batch(state, scores, k - n_audit, rng, X_neighbours=Xc, blocked=audit_idx)
    picked = np.concatenate([rows, audit_idx]).astype(np.int64)
    return cand[picked], names + ["random audit"] * n_audit, np.r_[np.zeros(len(rows), bool), np.ones(n_audit, bool)]


class SimulatedAuto:
    """``simulate``'s auto arm: the bandit's state, which arm chose each label and which are audit
    draws, and the evidence: ``evidence_size`` pool rows not yet labelled (at most a tenth), held out of
    the arm's pool as the simulated project's test split."""

    def __init__(self, n_seed: int, unlabelled: np.ndarray, y_arr: np.ndarray, evidence_size: int, rng):
        self.state: dict | None = None
        self.arms: list = [None] * n_seed
        self.audit: list = [False] * n_seed
        free = np.flatnonzero(unlabelled)
        k = min(evidence_size, len(free) // 10)
        self.evidence = np.sort(rng.choice(free, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        unlabelled[self.evidence] = False
        self.y_evidence = list(y_arr[self.evidence])

    def retrained(self, X_pool, labelled: list, y_arr, classes, C: float) -> None:
        self.state = next_state(
            self.state,
            X_pool[labelled],
            list(y_arr[labelled]),
            self.arms,
            self.audit,
            classes,
            C,
            held_out=(X_pool[self.evidence], self.y_evidence),
        )

    def pick(self, model, X_pool, cand: np.ndarray, labelled: list, k: int, audit_share: float, rng) -> np.ndarray:
        chosen, names, is_audit = simulate_pick(self.state, model, X_pool, cand, labelled, k, audit_share, rng)
        self.arms.extend(auto.arm_of(n) for n in names)
        self.audit.extend(bool(a) for a in is_audit)
        return chosen
