"""``strategy = "auto"``: the choice of query strategy as a bandit, learnt from evidence that the choice
cannot bias (after Active Learning by Learning, Hsu and Lin, AAAI 2015).

The arms are margin, entropy, the diversity variant, CAL (a neighbourhood strategy) and random. Each
batch is split among them by the bandit's shares; every arm keeps at least ``GAMMA / K`` of it, so
each keeps producing evidence. The random-audit arm is not one of them: it is drawn first, untouched
by the bandit, and it is evidence. The evidence is the random-audit labels and the project's test
split: uniform samples of the pool, fixed whatever the bandit chooses. After a retrain, each arm's
labels so far are valued by what they add to the evidence: the mean probability of its true labels
under a model of all labels but the audit ones, minus that under the same model without the arm's
labels, per label of the arm. The shares start from a prior, margin (the default strategy) and random
(the control) ahead of the others, and move away from it only by evidence beyond the noise: each
arm's value against the best arm's, in units of the measurement's standard error, soft-thresholded at
one standard error (a difference within the noise moves nothing), averaged over retrains; the
reference is the best arm, so an arm gains share only as the others are shown worse than it. Where no
arm is measurably better, auto is margin and random; a weak arm costs at most its exploration share.
The shares are a softmax of the log-weights, mixed with the exploration floor.

(ALBL's own reward, an importance-weighted accuracy on the queried items, needs each item's
probability of being queried; a batch of top-k picks has none, so the values here are measured on
held-out uniform samples instead.)
"""

from __future__ import annotations

import numpy as np

ARMS = ("margin", "entropy", "diversity", "cal", "random")
AUTO_PREFIX = "auto: "
GAMMA = 0.10  # exploration: every arm keeps at least GAMMA / K of each batch
ETA = 2.0  # log-weight = prior + ETA x the value in standard errors (thresholded): a clear best arm gets most
MEMORY = 0.5  # the weight of the newest retrain's evidence in the log-weights (an exponential average)
CLIP = 2.0  # thresholded values are clipped to [-CLIP, CLIP]: one noisy round cannot decide alone
MIN_EVIDENCE = 10  # audit labels needed before the shares move
MIN_ARM_LABELS = 2  # an arm's latest labels must be at least this many to be valued
# Before evidence: margin (the default) and random (the control) ahead; the other arms must earn their
# share. exp(2) ~ 7.4: margin and random start with 0.39 each, every other arm with 0.07.
PRIOR = {"margin": 2.0, "random": 2.0}
NOISE_Z = 1.0  # differences within this many standard errors move nothing (soft threshold)


def initial_state() -> dict:
    """The bandit before any evidence: the prior's weights."""
    return {
        "arms": list(ARMS),
        "log_weights": prior(),
        "shares": shares(prior()),
        "values": {},
        "labels": {},
        "evidence": 0,
        "updates": 0,
        "n_labels": 0,
        "note": "no evidence yet: the prior's shares (margin and random ahead)",
    }


def prior() -> dict:
    return {a: float(PRIOR.get(a, 0.0)) for a in ARMS}


def shares(log_weights: dict) -> dict:
    """Each arm's share of a batch: (1 - GAMMA) by the weights, GAMMA spread evenly."""
    arms = list(log_weights)
    lw = np.array([float(log_weights[a]) for a in arms])
    w = np.exp(lw - lw.max())
    p = (1 - GAMMA) * w / w.sum() + GAMMA / len(arms)
    return {a: float(x) for a, x in zip(arms, p)}


def allocate(share: dict, n: int, rng: np.random.Generator) -> dict:
    """``n`` batch slots among the arms in proportion to ``share`` (largest remainders; ties at random)."""
    arms = list(share)
    exact = np.array([share[a] for a in arms]) * n
    counts = np.floor(exact).astype(int)
    rest = n - int(counts.sum())
    if rest > 0:
        frac = exact - counts + rng.random(len(arms)) * 1e-9
        counts[np.argsort(-frac)[:rest]] += 1
    return {a: int(c) for a, c in zip(arms, counts)}


def update(state: dict, values: dict, labels: dict, evidence: int, n_labels: int) -> dict:
    """The state after a retrain: ``values`` per arm (accuracy on the evidence that an equal number of
    each arm's labels adds; None when the arm has too few labels) with ``_noise``, their standard error;
    ``labels`` the arms' label counts, ``evidence`` how many labels the values were measured on,
    ``n_labels`` the labels the model saw. Each arm's log-weight is the prior's plus an average over
    retrains of ETA x its value against the best arm's in standard errors, soft-thresholded at NOISE_Z
    and clipped at CLIP: the values are re-measured on all the evidence every round, so a real
    difference keeps counting while noise averages out and one noisy round moves nothing for good."""
    base = prior()
    values = dict(values)
    floor = values.pop("_noise", None) or 0.0
    seen = {a: v for a, v in values.items() if v is not None and np.isfinite(v)}
    new = dict(state)
    new.update(values={a: values.get(a) for a in base}, labels=dict(labels), evidence=int(evidence), n_labels=n_labels)
    prev = {a: float((state.get("log_weights") or base).get(a, base[a])) for a in base}
    if evidence < MIN_EVIDENCE:
        new["note"] = f"{evidence} random-audit labels so far; the shares move from {MIN_EVIDENCE}"
        lw = prev
    elif len(seen) < 2:
        new["note"] = "fewer than two arms have labels to compare; the shares stay"
        lw = prev
    else:
        v = np.array(list(seen.values()))
        se = floor if floor > 0 else float(v.std())
        # against the best arm: an arm within the noise of the best keeps its prior weight, one measurably
        # worse loses weight (a mean as the reference would let one very weak arm lift all the others)
        z = (v - v.max()) / se if se > 0 else np.zeros_like(v)
        z = np.minimum(z + NOISE_Z, 0.0)
        lw = {a: base[a] + (1 - MEMORY) * (prev[a] - base[a]) for a in base}
        for a, za in zip(seen, np.clip(z, -CLIP, CLIP)):
            lw[a] += MEMORY * ETA * float(za)
        new["updates"] = int(state.get("updates", 0)) + 1
        new["note"] = f"from {len(seen)} arms' value on {evidence} random-audit labels"
    new["log_weights"] = lw
    new["shares"] = shares(lw)
    return new


def arm_of(strategy: str | None) -> str | None:
    """The arm named in a queued item's strategy ("auto: margin (share 0.41)" -> "margin")."""
    if not strategy or not strategy.startswith(AUTO_PREFIX):
        return None
    name = strategy[len(AUTO_PREFIX) :].split(" ", 1)[0]
    return name if name in ARMS else None


def arm_label(arm: str, share: float) -> str:
    return f"{AUTO_PREFIX}{arm} (share {share:.2f})"


def pick_by_arms(
    counts: dict,
    scores: dict,
    n_pool: int,
    rng: np.random.Generator,
    *,
    blocked: np.ndarray | None = None,
    diversity_pick=None,
) -> tuple[np.ndarray, list[str]]:
    """The batch's rows (best first within each arm, arms by share) and each row's arm. ``scores``: per
    scoring arm, the pool's scores (higher = more worth labelling); ``blocked``: rows no arm may take
    (the carried audit items); ``diversity_pick(scores, k)``: the diversity variant's pick."""
    taken = np.zeros(n_pool, dtype=bool)
    if blocked is not None and len(blocked):
        taken[blocked] = True
    rows: list[int] = []
    arms: list[str] = []
    for arm in sorted(counts, key=lambda a: (-counts[a], ARMS.index(a) if a in ARMS else 99)):
        k = min(counts[arm], int((~taken).sum()))
        if k <= 0:
            continue
        if arm == "random":
            picked = rng.choice(np.flatnonzero(~taken), size=k, replace=False)
        else:
            s = np.where(taken, -np.inf, scores[arm])
            if arm == "diversity" and diversity_pick is not None:
                picked = np.asarray(diversity_pick(s, k), dtype=np.int64)
                picked = picked[~taken[picked]][:k]
            else:
                picked = np.argsort(-s, kind="stable")[:k]
        taken[picked] = True
        rows.extend(int(r) for r in picked)
        arms.extend([arm] * len(picked))
    return np.array(rows, dtype=np.int64), arms


def arm_values(
    X,
    y: list,
    arms: list,
    evidence: np.ndarray,
    classes: list[str],
    C: float,
    class_weight: str | None = None,
    held_out: tuple | None = None,
) -> tuple[dict, dict, int]:
    """(value per arm, labels per arm, evidence size). ``X``, ``y``: the labelled rows; ``arms``: each
    row's arm (None when not chosen by an arm of auto); ``evidence``: the random-audit rows, held out of
    every fit here; ``held_out``: (X, y) of more evidence that is never trained on (the project's test
    split). An arm's value: the mean probability of the evidence's true labels under a model of all
    labels but the evidence, minus that under the same model without the arm's labels, per label of
    the arm. None when there is too little to measure."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(y, dtype=object)
    arms_arr = np.array([a if a is not None else "" for a in arms], dtype=object)
    evidence = np.asarray(evidence, dtype=bool)
    labels = {a: int(np.sum((arms_arr == a) & ~evidence)) for a in ARMS}
    X_ev, y_ev = X[evidence], y[evidence]
    if held_out is not None and len(held_out[1]):
        import scipy.sparse as sp

        X_ev = sp.vstack([X_ev, held_out[0]]) if sp.issparse(X_ev) else np.vstack([X_ev, held_out[0]])
        y_ev = np.concatenate([y_ev, np.asarray(held_out[1], dtype=object)])
    n_ev = len(y_ev)
    if n_ev < MIN_EVIDENCE:
        return {a: None for a in ARMS}, labels, n_ev
    train = ~evidence
    base = {}

    def fit_score(mask: np.ndarray) -> float | None:
        ys = y[mask]
        if len(set(ys)) < 2:
            return None
        clf = LogisticRegression(C=C, max_iter=300, class_weight="balanced" if class_weight == "balanced" else None)
        full = base.get("clf")
        if full is not None and set(ys) == set(full.classes_):
            # leaving some labels out moves the optimum little: start from the full fit's
            clf.set_params(warm_start=True)
            clf.coef_, clf.intercept_ = full.coef_.copy(), full.intercept_.copy()
        clf.fit(X[mask], ys)
        base.setdefault("clf", clf)
        p = clf.predict_proba(X_ev)
        col = {c: i for i, c in enumerate(clf.classes_)}
        got = np.array([p[i, col[v]] if v in col else 0.0 for i, v in enumerate(y_ev)])
        return got >= p.max(axis=1)  # which evidence items it gets right: accuracy is what targets count

    full = fit_score(train)
    values: dict = {a: None for a in ARMS}
    noise: dict = {}
    # every arm is valued on the same number of its labels (the smallest arm's, drawn at random): the
    # last labels of a large arm are worth less than the first of a small one, which per-label values of
    # unequal counts would confuse with the arms' merit
    counts = {a: int(np.sum((arms_arr == a) & train)) for a in ARMS}
    valued = [a for a in ARMS if counts[a] >= MIN_ARM_LABELS]
    if full is None or len(valued) < 2:
        values["_noise"] = None
        return values, labels, n_ev
    m = min(counts[a] for a in valued)
    rng = np.random.default_rng(len(y))
    for a in valued:
        rows = np.flatnonzero((arms_arr == a) & train)
        drop = np.zeros(len(y), dtype=bool)
        drop[rng.choice(rows, size=m, replace=False)] = True
        without = fit_score(train & ~drop)
        if without is None:
            continue
        values[a] = float(full.mean() - without.mean()) / m
        # its standard error: the evidence items whose verdict changed, each one item in n_ev
        noise[a] = float(np.sqrt(max(int(np.sum(full != without)), 1))) / (n_ev * m)
    values["_noise"] = float(np.sqrt(np.mean([x * x for x in noise.values()]))) if noise else None
    return values, labels, n_ev


def shares_line(state: dict | None) -> str:
    """ "margin 0.41 · entropy 0.22 · …" (largest first), or "" without a state."""
    if not state or not state.get("shares"):
        return ""
    sh = state["shares"]
    return " · ".join(f"{a} {sh[a]:.2f}" for a in sorted(sh, key=lambda a: -sh[a]))
