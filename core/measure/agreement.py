"""Inter-annotator agreement on nominal labels, with bootstrap intervals over items (issue:
agreement, review and gold). No store and no UI: it takes ratings and returns numbers with reasons.

Ratings are ``{item_id: {annotator: label}}``; an item may have any number of ratings (missing
ratings allowed). A multi-label item's label is its sorted label set (one nominal category).

Measures (Gwet 2014, *Handbook of Inter-Rater Reliability*, the formulas irrCAC implements; for the
same number of raters per item, Fleiss' kappa is the textbook one statsmodels computes):

- percent agreement: over items with 2+ ratings, the share of agreeing rater pairs;
- Fleiss' kappa: (pa - pe) / (1 - pe), pe = sum of squared category shares;
- Gwet's AC1: pe = sum pi_k (1 - pi_k) / (q - 1): stays meaningful when one class dominates;
- Krippendorff's alpha (nominal), from the coincidence matrix;
- Cohen's kappa for a pair of annotators, on the items both rated.

Every measure comes as ``{"value", "low", "high", "n_items", "reason"}``: ``value`` is None with a
``reason`` when it is undefined (no item with two ratings, a single annotator, a single category:
perfect agreement but kappa is 0/0), never a bare NaN. Intervals are percentile bootstraps over items
(seeded, so the same ratings give the same interval).
"""

from __future__ import annotations

import itertools

import numpy as np

NAMES = {
    "percent": "percent agreement",
    "fleiss_kappa": "Fleiss' kappa",
    "gwet_ac1": "Gwet's AC1",
    "krippendorff_alpha": "Krippendorff's alpha",
}
BOOTSTRAP = 1000
LEVEL = 0.95
MEASURES = ("percent", "fleiss_kappa", "gwet_ac1", "krippendorff_alpha")


def _result(value, low=None, high=None, n_items=0, reason=None) -> dict:
    if value is not None and not np.isfinite(value):
        value, reason = None, reason or "undefined for these ratings"
    return {
        "value": None if value is None else float(value),
        "low": None if low is None else float(low),
        "high": None if high is None else float(high),
        "n_items": int(n_items),
        "reason": reason,
    }


def count_matrix(ratings: dict, categories: list[str] | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """(items x categories) counts of ratings, the categories and the item ids, for items with at
    least one rating."""
    cats = sorted({lab for r in ratings.values() for lab in r.values()}) if categories is None else list(categories)
    index = {c: j for j, c in enumerate(cats)}
    items = [i for i, r in ratings.items() if r]
    R = np.zeros((len(items), len(cats)), dtype=np.int64)
    for row, i in enumerate(items):
        for label in ratings[i].values():
            R[row, index[label]] += 1
    return R, cats, items


# -- the measures on count matrices; the leading axes are bootstrap samples -----------------------
def _pa(R: np.ndarray) -> np.ndarray:
    m = R.sum(-1)
    ok = m >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        per = (R * (R - 1)).sum(-1) / (m * (m - 1))
    per = np.where(ok, per, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return per.sum(-1) / ok.sum(-1)


def _pi(R: np.ndarray) -> np.ndarray:
    m = R.sum(-1, keepdims=True)
    rated = m[..., 0] >= 1
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(m > 0, R / m, 0.0)
    return share.sum(-2) / rated.sum(-1)[..., None]


def _fleiss(R: np.ndarray) -> np.ndarray:
    pa, pe = _pa(R), (_pi(R) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pa - pe) / (1 - pe)


def _ac1(R: np.ndarray) -> np.ndarray:
    q = R.shape[-1]
    pa, pi = _pa(R), _pi(R)
    pe = (pi * (1 - pi)).sum(-1) / (q - 1) if q > 1 else np.full(pa.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pa - pe) / (1 - pe)


def _alpha(R: np.ndarray) -> np.ndarray:
    m = R.sum(-1)
    pairable = m >= 2
    Rp = np.where(pairable[..., None], R, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        d_o = np.where(pairable, (m**2 - (R**2).sum(-1)) / (m - 1), 0.0).sum(-1)
    n_c = Rp.sum(-2)
    n = n_c.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1 - (n - 1) * d_o / (n**2 - (n_c**2).sum(-1))


_FUNCS = {"percent": _pa, "fleiss_kappa": _fleiss, "gwet_ac1": _ac1, "krippendorff_alpha": _alpha}


def _why_undefined(R: np.ndarray, measure: str) -> str | None:
    m = R.sum(-1)
    if (m >= 2).sum() == 0:
        raters = "a single annotator" if R.size and m.max(initial=0) <= 1 else "no ratings"
        return f"no item has two ratings yet ({raters}); agreement needs overlap"
    used = (R[m >= 2].sum(0) > 0).sum()
    # AC1's chance term uses the whole scale (every category the project has), so it stays defined
    if measure in ("fleiss_kappa", "krippendorff_alpha") and used <= 1:
        return (
            "only one category was used on the overlapping items: the raters agree on every one, but "
            f"{NAMES[measure]} is 0/0 there; read percent agreement and AC1"
        )
    return None


def measure(R: np.ndarray, name: str, *, seed: int = 0, bootstrap: int = BOOTSTRAP) -> dict:
    """One measure on a count matrix with its bootstrap interval over items."""
    if name == "gwet_ac1" and R.shape[-1] < 2:
        return _result(None, n_items=int((R.sum(-1) >= 2).sum()), reason="AC1 needs at least two categories")
    reason = _why_undefined(R, name)
    n2 = int((R.sum(-1) >= 2).sum())
    if reason:
        return _result(None, n_items=n2, reason=reason)
    value = float(_FUNCS[name](R))
    low = high = None
    if bootstrap and len(R) >= 2:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(R), size=(bootstrap, len(R)))
        samples = _FUNCS[name](R[idx])
        samples = samples[np.isfinite(samples)]
        if len(samples) >= 0.9 * bootstrap:
            a = (1 - LEVEL) / 2
            low, high = np.quantile(samples, [a, 1 - a])
    return _result(value, low, high, n2)


def cohen_kappa(a: list, b: list, *, seed: int = 0, bootstrap: int = BOOTSTRAP) -> dict:
    """Cohen's kappa of two raters' labels on the same items (in the same order)."""
    n = len(a)
    if n == 0:
        return _result(None, reason="the two annotators share no item")
    cats = sorted(set(a) | set(b))
    if len(cats) == 1:
        return _result(None, n_items=n, reason="both used a single category: full agreement, kappa undefined (0/0)")
    ia = np.array([cats.index(x) for x in a])
    ib = np.array([cats.index(x) for x in b])

    def kappa(ia, ib):
        q = len(cats)
        po = (ia == ib).mean(-1)
        ca = np.stack([(ia == k).mean(-1) for k in range(q)], -1)
        cb = np.stack([(ib == k).mean(-1) for k in range(q)], -1)
        pe = (ca * cb).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (po - pe) / (1 - pe)

    value = float(kappa(ia, ib))
    low = high = None
    if bootstrap and n >= 2:
        idx = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n))
        s = kappa(ia[idx], ib[idx])
        s = s[np.isfinite(s)]
        if len(s) >= 0.9 * bootstrap:
            low, high = np.quantile(s, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return _result(value, low, high, n)


ARMS = ("al", "audit", "cold")
"""The arms agreement is shown for: AL-selected, random-audit and cold-start items."""


def agreement_report(
    ratings: dict,
    *,
    categories: list[str] | None = None,
    arms: dict | None = None,
    seed: int = 0,
    bootstrap: int = BOOTSTRAP,
) -> dict:
    """Everything the metrics pane and ``status`` show: overall, per class (one against the rest), per
    annotator (each against the others), per pair (Cohen), per arm (``arms``: item -> ``al``,
    ``audit`` or ``cold``: AL-selected, random-audit and cold-start items apart), and the class
    prevalence beside them."""
    R, cats, items = count_matrix(ratings, categories)
    overlap = R.sum(-1) >= 2
    out: dict = {
        "n_items_rated": len(items),
        "n_items_overlap": int(overlap.sum()),
        "annotators": sorted({a for r in ratings.values() for a in r}),
        "prevalence": {c: float(R[:, j].sum() / R.sum()) if R.sum() else 0.0 for j, c in enumerate(cats)},
        "overall": {m: measure(R, m, seed=seed, bootstrap=bootstrap) for m in MEASURES},
    }
    out["per_class"] = {}
    for j, c in enumerate(cats):
        binary = np.stack([R[:, j], R.sum(-1) - R[:, j]], -1)  # this class against the rest
        out["per_class"][c] = {m: measure(binary, m, seed=seed, bootstrap=bootstrap) for m in MEASURES}
    annotators = out["annotators"]
    out["pairs"] = {}
    for x, y in itertools.combinations(annotators, 2):
        shared = [i for i in items if x in ratings[i] and y in ratings[i]]
        if shared:
            out["pairs"][f"{x} & {y}"] = cohen_kappa(
                [ratings[i][x] for i in shared], [ratings[i][y] for i in shared], seed=seed, bootstrap=bootstrap
            )
    out["per_annotator"] = {}
    for a in annotators:
        mine = [i for i in items if a in ratings[i] and len(ratings[i]) >= 2]
        if not mine:
            out["per_annotator"][a] = {
                "agree_with_others": _result(None, reason="no item shared with another annotator")
            }
            continue
        # the share of this annotator's pairs (with each other rater of the item) that agree
        agree = np.array(
            [sum(ratings[i][a] == lab for b, lab in ratings[i].items() if b != a) / (len(ratings[i]) - 1) for i in mine]
        )
        low = high = None
        if bootstrap and len(agree) >= 2:
            idx = np.random.default_rng(seed).integers(0, len(agree), size=(bootstrap, len(agree)))
            low, high = np.quantile(agree[idx].mean(-1), [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
        out["per_annotator"][a] = {"agree_with_others": _result(agree.mean(), low, high, len(mine))}
    if arms is not None:
        of = np.array([arms.get(i, "al") for i in items], dtype=object)
        out["by_arm"] = {
            arm: {m: measure(R[of == arm], m, seed=seed, bootstrap=bootstrap) for m in ("percent", "gwet_ac1")}
            for arm in ARMS
        }
    return out
