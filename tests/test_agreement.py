"""Agreement statistics (core/measure/agreement.py) against reference implementations (scikit-learn,
statsmodels, krippendorff, and values produced by irrCAC) on random and hand-made ratings, against
published worked examples, and on the edge cases where the libraries give NaN or raise."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.core.measure.agreement import agreement_report, cohen_kappa, count_matrix, measure

krippendorff = pytest.importorskip("krippendorff")
statsmodels_irr = pytest.importorskip("statsmodels.stats.inter_rater")
pd = pytest.importorskip("pandas")


def random_ratings(
    seed: int, n_items=60, raters=("a", "b", "c", "d"), cats=("x", "y", "z"), missing=0.3, noise=0.3
) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_items):
        truth = rng.choice(cats)
        r = {}
        for a in raters:
            if rng.random() < missing:
                continue
            r[a] = truth if rng.random() > noise else rng.choice(cats)
        out[f"i{i}"] = r
    return out


def as_table(ratings: dict, raters) -> np.ndarray:
    """raters x items with NaN for missing (the krippendorff package's layout), categories as ints."""
    cats = sorted({lab for r in ratings.values() for lab in r.values()})
    return np.array(
        [[cats.index(ratings[i][a]) if a in ratings[i] else np.nan for i in ratings] for a in raters], dtype=float
    )


@pytest.mark.parametrize("seed", range(6))
def test_krippendorff_alpha_matches_the_krippendorff_package_with_missing_ratings(seed):
    ratings = random_ratings(seed)
    R, _c, _i = count_matrix(ratings)
    ours = measure(R, "krippendorff_alpha", bootstrap=0)["value"]
    ref = krippendorff.alpha(reliability_data=as_table(ratings, "abcd"), level_of_measurement="nominal")
    assert ours == pytest.approx(ref, abs=1e-9)


# irrCAC 0.4.4 (Gwet's own package, ported to Python) pins scipy==1.12, which cannot be installed beside
# numpy 2 (needed by wordllama), so it cannot sit in the test environment. Its results on these six
# rating sets were produced with it in a separate environment (irrcac 0.4.4, numpy 1.26.4, pandas 2):
#   df = pd.DataFrame({a: [r[i].get(a) for i in r] for a in "abcd"}); c = irrCAC.raw.CAC(df)
#   (c.fleiss()["est"]["coefficient_value"], c.gwet()["est"]["coefficient_value"], c.fleiss()["est"]["pa"])
# irrCAC rounds to five decimals. numpy's default_rng stream is the same under numpy 1.26 and 2.x.
IRRCAC = {
    0: (0.40619, 0.44095, 0.61988),
    1: (0.37571, 0.39527, 0.59259),
    2: (0.35109, 0.36522, 0.57372),
    3: (0.4463, 0.45444, 0.6345),
    4: (0.51742, 0.53787, 0.6875),
    5: (0.46528, 0.47485, 0.6478),
}


@pytest.mark.parametrize("seed", range(6))
def test_fleiss_and_ac1_match_irrcac_with_unequal_raters_per_item(seed):
    ratings = random_ratings(seed)
    R, _c, _i = count_matrix(ratings)
    fleiss, ac1, pa = IRRCAC[seed]
    assert measure(R, "fleiss_kappa", bootstrap=0)["value"] == pytest.approx(fleiss, abs=1e-4)
    assert measure(R, "gwet_ac1", bootstrap=0)["value"] == pytest.approx(ac1, abs=1e-4)
    assert measure(R, "percent", bootstrap=0)["value"] == pytest.approx(pa, abs=1e-4)


def test_fleiss_and_ac1_on_krippendorffs_data_match_irrcac():
    """The 4-observer, 12-unit data of Krippendorff (2011) with missing ratings ("cac.raters" in the R
    irrCAC package): irrCAC gives Fleiss 0.76117, AC1 0.77544, percent agreement 0.81818."""
    nan = np.nan
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    ratings = {
        f"u{j}": {f"o{k}": str(int(data[k][j])) for k in range(4) if not np.isnan(data[k][j])} for j in range(12)
    }
    R, _c, _i = count_matrix(ratings)
    assert measure(R, "fleiss_kappa", bootstrap=0)["value"] == pytest.approx(0.76117, abs=1e-4)
    assert measure(R, "gwet_ac1", bootstrap=0)["value"] == pytest.approx(0.77544, abs=1e-4)
    assert measure(R, "percent", bootstrap=0)["value"] == pytest.approx(0.81818, abs=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_fleiss_matches_statsmodels_with_equal_raters(seed):
    ratings = random_ratings(seed, missing=0.0)
    R, _c, _i = count_matrix(ratings)
    assert measure(R, "fleiss_kappa", bootstrap=0)["value"] == pytest.approx(statsmodels_irr.fleiss_kappa(R), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_cohen_matches_scikit_learn(seed):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    a = list(rng.choice(["x", "y", "z"], 80))
    b = [x if rng.random() < 0.7 else rng.choice(["x", "y", "z"]) for x in a]
    assert cohen_kappa(a, b, bootstrap=0)["value"] == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_fleiss_1971_worked_example():
    """Fleiss (1971), as reproduced in most textbooks: 10 subjects, 14 raters, 5 categories, kappa 0.210."""
    R = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert measure(R, "fleiss_kappa", bootstrap=0)["value"] == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_2011_worked_example():
    """Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011): 4 observers, 12 units, values
    1-5 with missing data; nominal alpha 0.743."""
    nan = np.nan
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    ratings = {
        f"u{u}": {f"o{o}": str(int(data[o][u])) for o in range(4) if not np.isnan(data[o][u])} for u in range(12)
    }
    R, _c, _i = count_matrix(ratings)
    assert measure(R, "krippendorff_alpha", bootstrap=0)["value"] == pytest.approx(0.743, abs=5e-4)


def test_edge_cases_give_a_reason_never_a_nan_or_a_crash():
    one_cat = {"i1": {"a": "x", "b": "x"}, "i2": {"a": "x", "b": "x"}}
    R, _c, _i = count_matrix(one_cat)
    for m in ("fleiss_kappa", "krippendorff_alpha", "gwet_ac1"):
        r = measure(R, m)
        assert r["value"] is None and r["reason"], m
    assert measure(R, "percent")["value"] == 1.0
    with pytest.raises(Exception):  # the reference package raises here; we give a reason instead
        krippendorff.alpha(reliability_data=[[0, 0], [0, 0]], level_of_measurement="nominal")
    no_overlap = {"i1": {"a": "x"}, "i2": {"b": "y"}}
    R, _c, _i = count_matrix(no_overlap)
    assert measure(R, "fleiss_kappa")["reason"].startswith("no item has two ratings")
    single = {"i1": {"a": "x"}, "i2": {"a": "y"}}
    rep = agreement_report(single)
    assert rep["overall"]["percent"]["value"] is None and "single annotator" in rep["overall"]["percent"]["reason"]
    assert rep["per_annotator"]["a"]["agree_with_others"]["reason"]
    assert cohen_kappa(["x", "x"], ["x", "x"])["value"] is None
    assert agreement_report({})["overall"]["fleiss_kappa"]["value"] is None


def test_kappa_collapses_when_one_class_dominates_and_ac1_does_not():
    """The paradox that motivates AC1 beside kappa: 95 % agreement on a rare class gives a low kappa."""
    ratings = {f"i{i}": {"a": "neg", "b": "neg"} for i in range(95)}
    ratings.update(
        {
            "p1": {"a": "pos", "b": "neg"},
            "p2": {"a": "neg", "b": "pos"},
            "p3": {"a": "pos", "b": "neg"},
            "p4": {"a": "neg", "b": "pos"},
            "p5": {"a": "pos", "b": "pos"},
        }
    )
    rep = agreement_report(ratings, bootstrap=0)
    o = rep["overall"]
    assert o["percent"]["value"] == pytest.approx(0.96)
    assert o["fleiss_kappa"]["value"] < 0.35 < 0.9 < o["gwet_ac1"]["value"]
    assert rep["prevalence"]["pos"] == pytest.approx(6 / 200)


def test_bootstrap_interval_covers_the_value_and_narrows_with_more_items():
    small = agreement_report(random_ratings(1, n_items=40, missing=0.0))["overall"]["gwet_ac1"]
    large = agreement_report(random_ratings(1, n_items=400, missing=0.0))["overall"]["gwet_ac1"]
    for r in (small, large):
        assert r["low"] <= r["value"] <= r["high"]
    assert (large["high"] - large["low"]) < (small["high"] - small["low"]) / 2
    again = agreement_report(random_ratings(1, n_items=40, missing=0.0))["overall"]["gwet_ac1"]
    assert again == small  # seeded: the same ratings give the same interval


def test_report_splits_al_and_audit_items_and_names_each_annotator():
    ratings = random_ratings(3, n_items=120, noise=0.2)
    # annotator d is careless on the audit items only
    audit = {i for k, i in enumerate(ratings) if k % 3 == 0}
    for i in audit:
        if "d" in ratings[i]:
            ratings[i]["d"] = {"x": "y", "y": "z", "z": "x"}[ratings[i]["d"]]
    rep = agreement_report(ratings, arms={i: "audit" if i in audit else "al" for i in ratings})
    assert rep["by_arm"]["audit"]["percent"]["value"] < rep["by_arm"]["al"]["percent"]["value"]
    per = rep["per_annotator"]
    assert per["d"]["agree_with_others"]["value"] < min(per[a]["agree_with_others"]["value"] for a in "abc")
    assert set(rep["pairs"]) == {"a & b", "a & c", "a & d", "b & c", "b & d", "c & d"}
    assert set(rep["per_class"]) == {"x", "y", "z"}
    for c in "xyz":  # every measure per class (this class against the rest), each with its interval
        assert set(rep["per_class"][c]) == {"percent", "fleiss_kappa", "gwet_ac1", "krippendorff_alpha"}
        r = rep["per_class"][c]["gwet_ac1"]
        assert r["low"] <= r["value"] <= r["high"]


def test_cold_start_items_are_an_arm_of_their_own_not_counted_as_al():
    """Keyword-seeded cold-start items that annotators disagree on must not lower the AL arm (the
    warning sign 'lower agreement on AL-selected items' once fired on them)."""
    from labelloop.core.measure.signs import warning_signs

    ratings = {f"i{k}": {"a": "x", "b": "x"} for k in range(30)}  # AL and audit items: full agreement
    arms = {f"i{k}": "al" if k < 15 else "audit" for k in range(30)}
    for k in range(30, 45):  # cold-start items: half disagreement
        ratings[f"i{k}"] = {"a": "x", "b": "y" if k % 2 else "x"}
        arms[f"i{k}"] = "cold"
    rep = agreement_report(ratings, arms=arms, bootstrap=0)
    by = rep["by_arm"]
    assert by["al"]["percent"]["value"] == 1.0 and by["al"]["percent"]["n_items"] == 15
    assert by["audit"]["percent"]["value"] == 1.0 and by["cold"]["percent"]["n_items"] == 15
    assert by["cold"]["percent"]["value"] < 0.6
    fired = {s["key"]: s["fires"] for s in warning_signs([], agreement=rep)}
    assert fired["agreement_lower_on_al"] is False


def test_the_store_names_each_items_arm(tmp_path):
    from labelloop.core.store.project import Project, init_project
    from labelloop.core.store.reports import annotation_ratings
    from tests.conftest import write_csv

    d = init_project(tmp_path / "p", ["x", "y"])
    with Project.open(d) as p:
        from labelloop.core.store.imports import import_file

        import_file(
            p, write_csv(tmp_path / "in.csv", ["id", "text"], [[f"i{k}", f"text {k}"] for k in range(4)]), id_col="id"
        )
        s = p.store
        s.append_event("i0", "label", "a", via="key", labels=["x"], strategy="cold start: keyword (keyword match)")
        s.append_event("i1", "label", "a", via="key", labels=["x"], strategy="random", audit=True)
        s.append_event("i2", "label", "a", via="key", labels=["x"], strategy="margin", audit=False)
        s.append_event("i3", "label", "a", via="key", labels=["x"])
        _ratings, arms = annotation_ratings(s)
    assert arms == {"i0": "cold", "i1": "audit", "i2": "al", "i3": "cold"}
