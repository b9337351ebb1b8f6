"""Is AL working here? Each readiness check and each warning sign on constructed inputs where it must
pass and where it must fail; the AL-vs-random arm curves; the stored measurements read back; the
report page parsed and every chart decoded."""

from __future__ import annotations

import base64
import csv
import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest

from labelloop.core.engine.features import load_or_build_features
from labelloop.core.loop import readiness as R
from labelloop.core.measure.signs import arm_curves, cost_per_point, warning_signs
from labelloop.core.text.report import CHARTS, write_report
from tests.tui_helpers import project_copy

CFG = SimpleNamespace(cost_per_label=0.10, seconds_per_label=15.0, compute_price_per_hour=0.50)


# -- the checks ---------------------------------------------------------------------------------------


def test_calibration_check():
    assert R.check_calibration({"ece": 0.05, "ece_uncalibrated": 0.09})["status"] == "pass"
    assert R.check_calibration({"ece": 0.20, "ece_uncalibrated": 0.25})["status"] == "fail"
    # calibration made it worse (the example): the raw model should be used, and it says so
    worse = R.check_calibration({"ece": 0.121, "ece_uncalibrated": 0.092})
    assert worse["status"] == "fail" and 'calibration = "none"' in worse["todo"] and "worse" in worse["detail"]
    assert R.check_calibration({"ece": 0.08, "ece_uncalibrated": 0.05})["status"] == "warn"
    assert R.check_calibration(None)["status"] == "n/a"


def test_cost_check():
    cheap = R.check_cost(1000, compute_seconds=60.0, retrain_seconds=60.0, cfg=CFG)
    assert cheap["status"] == "pass" and cheap["value"] < 0.10
    # an hour of retraining for 100 labels: annotators wait far longer than they label
    dear = R.check_cost(100, compute_seconds=3600.0, retrain_seconds=3600.0, cfg=CFG)
    assert dear["status"] == "fail" and dear["value"] > 0.30
    assert R.check_cost(0, 0.0, 0.0, CFG)["status"] == "n/a"


def _curve(ns, a=0.9, b=2.0, c=0.6):
    return [{"n_labels": n, "accuracy": a - b * n**-c} for n in ns]


def test_pool_size_check():
    rows = _curve([50, 100, 200, 400, 800])
    big, small = R.check_pool(rows, 100_000), R.check_pool(rows, 3_000)
    assert big["status"] == "pass" and small["status"] == "fail"
    assert "plateau 0.900" in big["detail"]
    assert R.check_pool(rows[:2], 100_000)["status"] == "n/a"
    # still climbing steeply at the last point: no plateau to extrapolate from, and it says so
    climbing = [{"n_labels": n, "accuracy": 0.3 + 0.0009 * n} for n in (50, 100, 200, 300, 400, 500)]
    c = R.check_pool(climbing, 3_000)
    assert c["status"] == "warn" and "not started to flatten" in c["detail"]


def _feats(tmp_path, texts, splits):
    n = len(texts)
    arrays = (
        np.array([f"i{i}" for i in range(n)], dtype=object),
        np.arange(n),
        np.array(splits, dtype=object),
        list(texts),
        np.arange(n, dtype=np.uint64),
    )
    return load_or_build_features((n, n - 1, "x"), lambda: arrays, tmp_path, embeddings=True)


def test_distribution_check(tmp_path):
    rng = np.random.default_rng(0)
    sport = [
        "the team won the {} match",
        "a great goal in the {} game",
        "the players trained for the {} final",
        "fans cheered at the {} stadium",
    ]
    food = [
        "simmer the {} sauce slowly",
        "bake the {} bread for an hour",
        "season the {} soup with salt",
        "chop the {} onions finely",
    ]
    words = ["big", "late", "second", "first", "local", "new", "old", "long"]
    mixed = [rng.choice(sport + food).format(rng.choice(words)) for _ in range(400)]
    same = _feats(tmp_path / "a", mixed, ["pool"] * 300 + ["test"] * 100)
    ok = R.check_distribution(same, np.arange(300), np.arange(300, 400))
    assert ok["status"] == "pass" and ok["value"] < 0.6
    texts = [rng.choice(sport).format(rng.choice(words)) for _ in range(300)] + [
        rng.choice(food).format(rng.choice(words)) for _ in range(100)
    ]
    shifted = _feats(tmp_path / "b", texts, ["pool"] * 300 + ["test"] * 100)
    bad = R.check_distribution(shifted, np.arange(300), np.arange(300, 400))
    assert bad["status"] == "fail" and bad["value"] > 0.9 and "sentence embeddings" in bad["detail"]


def test_cold_start_check_names_the_rare_classes():
    assert R.check_cold_start({"a": 12, "b": 30}, ["a", "b"], 10)["status"] == "pass"
    warn = R.check_cold_start({"a": 4, "b": 30}, ["a", "b"], 10)
    assert warn["status"] == "warn" and "a (4)" in warn["detail"]
    fail = R.check_cold_start({"a": 0, "b": 30, "c": 12}, ["a", "b", "c"], 10)
    assert fail["status"] == "fail" and "a (0)" in fail["detail"] and "c (" not in fail["detail"]


def test_guideline_coverage_check():
    fine = [("wrong class", True)] * 18 + [("ambiguous", False)] * 2
    assert R.check_guidelines(fine)["status"] == "pass"
    # overall 20% but 33% on AL-selected items: the AL share decides
    gaps = [("wrong class", True)] * 10 + [("guideline gap", True)] * 5 + [("wrong class", False)] * 5
    g = R.check_guidelines(gaps)
    assert g["status"] == "fail" and "on AL-selected items 33%" in g["detail"]
    assert R.check_guidelines(fine[:5])["status"] == "n/a"


def test_duplicates_and_leakage_check():
    assert (
        R.check_duplicates({"pool": 1000, "pool_duplicates": 5, "leaked": 0, "leaked_examples": []})["status"] == "pass"
    )
    assert (
        R.check_duplicates({"pool": 1000, "pool_duplicates": 50, "leaked": 0, "leaked_examples": []})["status"]
        == "warn"
    )
    leak = R.check_duplicates({"pool": 1000, "pool_duplicates": 0, "leaked": 2, "leaked_examples": ["p1", "p7"]})
    assert leak["status"] == "fail" and "p1, p7" in leak["detail"]


# -- the six warning signs -------------------------------------------------------------------------------


def _pc(**recalls):
    return {c: {"recall": r, "support": 10} for c, r in recalls.items()}


def _signs(rows, **kw):
    return {w["key"]: w for w in warning_signs(rows, **kw)}


def _stall_curve(accs, n_test=500, step=50):
    return [{"version": i + 1, "n_labels": 50 + step * i, "accuracy": a, "n_test": n_test} for i, a in enumerate(accs)]


def test_the_stall_sign_fires_on_a_flat_curve_and_not_on_a_rising_one():
    flat = _stall_curve([0.80, 0.801, 0.799, 0.80, 0.802, 0.80, 0.801, 0.80])  # 400 labels, nothing learned
    rising = _stall_curve([0.60, 0.64, 0.68, 0.71, 0.74, 0.76, 0.78, 0.80])
    slowing = _stall_curve([0.60, 0.70, 0.76, 0.79, 0.80, 0.805, 0.806, 0.806])  # gains shrink, still outside noise
    s = _signs(flat)["loop_stalled"]
    assert s["fires"] and "stop labelling" in s["todo"] and "100 labels" in s["rule"]
    assert not _signs(rising)["loop_stalled"]["fires"]
    assert not _signs(slowing)["loop_stalled"]["fires"]
    assert not _signs(flat[:4])["loop_stalled"]["fires"]  # fewer than three windows: no verdict
    from labelloop.core.measure.signs import N_SIGNS, summary_line

    assert len(warning_signs(flat)) == N_SIGNS == 6
    assert "1 of 6 warnings (loop_stalled)" in summary_line({"version": 8, "warnings": ["loop_stalled"]})


def test_recall_divergence_sign():
    diverging = [{"per_class": _pc(a=0.7, b=0.65)}, {"per_class": _pc(a=0.8, b=0.6)}, {"per_class": _pc(a=0.9, b=0.5)}]
    steady = [{"per_class": _pc(a=0.7, b=0.65)}, {"per_class": _pc(a=0.75, b=0.7)}, {"per_class": _pc(a=0.8, b=0.78)}]
    assert _signs(diverging)["recall_diverging"]["fires"]
    assert not _signs(steady)["recall_diverging"]["fires"]


def _agreement(al, audit, n=20):
    return {
        "by_arm": {"al": {"percent": {"value": al, "n_items": n}}, "audit": {"percent": {"value": audit, "n_items": n}}}
    }


def test_agreement_sign():
    assert _signs([], agreement=_agreement(0.6, 0.9))["agreement_lower_on_al"]["fires"]
    assert not _signs([], agreement=_agreement(0.85, 0.9))["agreement_lower_on_al"]["fires"]
    assert not _signs([], agreement=_agreement(0.3, 0.9, n=5))["agreement_lower_on_al"]["fires"]  # too few items


def test_ece_sign():
    assert _signs([{"ece": 0.15}])["ece_high"]["fires"]
    assert not _signs([{"ece": 0.05}])["ece_high"]["fires"]


def test_random_beats_al_sign():
    worse = {"points": [{"n": 20, "diff": -0.08, "diff_low": -0.12, "diff_high": -0.03}]}
    unsure = {"points": [{"n": 20, "diff": -0.02, "diff_low": -0.06, "diff_high": 0.02}]}
    assert _signs([{"arms": worse}])["random_beats_al"]["fires"]
    assert not _signs([{"arms": unsure}])["random_beats_al"]["fires"]


def test_batch_convergence_sign():
    assert _signs([], signals={"convergence_ratio": 2.1})["batches_converging"]["fires"]
    assert not _signs([], signals={"convergence_ratio": 1.05})["batches_converging"]["fires"]
    # a keyword cold-start batch is similar by design: not a query batch converging
    assert not _signs([], signals={"convergence_ratio": 2.1}, batch_strategy="cold start: keyword")[
        "batches_converging"
    ]["fires"]


def test_arm_curves_see_an_arm_with_wrong_labels():
    """The AL arm's labels are shuffled, the random arm's are right: at equal budget the random arm
    is measurably better, and the warning sign fires from the stored shape."""
    rng = np.random.default_rng(1)
    n, d = 400, 10
    y = rng.integers(0, 2, n)
    X = np.vstack([rng.normal(y[i] * 2.0, 1.0, d) for i in range(n)])
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    names = np.array(["neg", "pos"], dtype=object)
    lab = np.arange(0, 200)
    arms = ["cold"] * 10 + ["al"] * 95 + ["audit"] * 95
    ylab = names[y[lab]].copy()
    al_idx = np.arange(10, 105)
    ylab[al_idx] = rng.permutation(ylab[al_idx])
    ylab[al_idx[:60]] = np.where(ylab[al_idx[:60]] == "pos", "neg", "pos")  # mostly wrong
    out = arm_curves(X, lab, list(ylab), arms, np.arange(200, 400), list(names[y[200:400]]), ["neg", "pos"])
    assert out["budget"] == 95 and len(out["points"]) >= 3
    last = out["points"][-1]
    assert last["random"] > last["al"] and last["diff_high"] < 0
    assert last["al_low"] <= last["al"] <= last["al_high"]
    assert _signs([{"arms": out}])["random_beats_al"]["fires"]
    few = arm_curves(
        X,
        lab[:14],
        list(ylab[:14]),
        ["cold"] * 10 + ["al"] * 2 + ["audit"] * 2,
        np.arange(200, 400),
        list(names[y[200:400]]),
        ["neg", "pos"],
    )
    assert few["points"] == [] and "compared from" in few["note"]


def test_cost_per_accuracy_point_in_a_rolling_window():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = [
        {"version": 1, "created_at": t0, "n_labels": 100, "compute_seconds": 0.0, "accuracy": 0.60},
        {
            "version": 2,
            "created_at": t0 + timedelta(days=10),
            "n_labels": 300,
            "compute_seconds": 0.0,
            "accuracy": 0.70,
        },
        {
            "version": 3,
            "created_at": t0 + timedelta(days=45),
            "n_labels": 500,
            "compute_seconds": 0.0,
            "accuracy": 0.72,
        },
    ]
    c = {r["version"]: r for r in cost_per_point(rows, 0.10, 0.5)}
    assert c[1]["cost_per_point"] is None
    assert c[2]["cost_per_point"] == pytest.approx(20.0 / 10.0)  # 200 labels x 0.10 for 10 points
    # version 3's window (30 days) starts after version 1 and 2: it has only itself
    assert c[3]["cost_per_point"] is None


# -- through a real project: the stored measurements, check and status ---------------------------------


def test_each_retrain_stores_a_measurement_that_check_reads_back(tmp_path):
    from labelloop.core.api.service import Service

    d = project_copy(tmp_path)
    svc = Service(d, compute="thread", owner="lead")
    try:
        r = svc.handle("lead", "check", {})
        st = svc.handle("lead", "status", {})
    finally:
        svc.close()
    ms = r["measurements"]
    assert [m["version"] for m in ms] == [1]  # the copy has one trained version
    m = ms[0]
    assert m["n_labels"] > 0 and 0 <= m["accuracy"] <= 1 and m["ece"] is not None and m["features"]
    assert m["n_cold"] + m["n_al"] + m["n_audit"] == m["n_labels"]
    assert {c["key"] for c in r["checks"]} == {
        "calibration",
        "cost",
        "pool",
        "distribution",
        "cold_start",
        "guidelines",
        "duplicates",
    }
    assert len(r["warnings"]) == 6 and {w["key"] for w in st["warnings"]} == {w["key"] for w in r["warnings"]}
    from labelloop.core.text.status import format_status

    assert "warning signs" in format_status(st)


# -- the report --------------------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.scripts, self.text = [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_one_offline_page_whose_charts_all_decode(tmp_path):
    hostile = "<script>alert(1)</script>$x^2$\x1b[31m"
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    ms = []
    for v, n in enumerate((60, 120, 180, 240), start=1):
        ms.append(
            {
                "version": v,
                "created_at": (t0 + timedelta(days=v)).isoformat(),
                "n_labels": n,
                "n_al": n - 60,
                "n_audit": 6 * v,
                "n_cold": 50,
                "compute_seconds": 3.0 * v,
                "accuracy": 0.5 + 0.05 * v,
                "macro_f1": 0.45 + 0.05 * v,
                "majority_baseline": 0.4,
                "ece": 0.08,
                "ece_uncalibrated": 0.12,
                "features": "tfidf",
                "per_class": {hostile: {"recall": 0.5 + 0.1 * v, "support": 10}, "ok": {"recall": 0.6, "support": 10}},
                "reliability": {
                    "bin_confidence": [0.55, 0.75, 0.95],
                    "bin_accuracy": [0.5, 0.7, 0.9],
                    "bin_counts": [10, 20, 30],
                },
                "arms": {
                    "points": [
                        {
                            "n": 10,
                            "labels_each": 60,
                            "al": 0.6,
                            "al_low": 0.55,
                            "al_high": 0.65,
                            "random": 0.58,
                            "random_low": 0.52,
                            "random_high": 0.63,
                            "diff": 0.02,
                            "diff_low": -0.02,
                            "diff_high": 0.06,
                        }
                    ],
                    "cold_labels": 50,
                },
            }
        )
    r = {
        "project": hostile,
        "labels": [hostile, "ok"],
        "n_labels": 240,
        "measurements": ms,
        "checks": [R.check_duplicates({"pool": 10, "pool_duplicates": 0, "leaked": 1, "leaked_examples": [hostile]})],
        "warnings": warning_signs(ms),
        "cost_per_point": [{"version": 2, "spent": 6.0, "gain_points": 5.0, "cost_per_point": 1.2}],
        "agreement": _agreement(0.8, 0.9),
    }
    page = write_report(r, tmp_path / "out")
    raw = page.read_text(encoding="utf-8")
    assert "<script>" not in raw and "\x1b" not in raw and "http://" not in raw.replace("http://www.w3.org", "")
    p = _Page()
    p.feed(raw)
    assert p.scripts == 0 and len(p.images) == len(CHARTS) == 6
    for src in p.images:
        assert src.startswith("data:image/svg+xml;base64,")
        root = ET.fromstring(base64.b64decode(src.split(",", 1)[1]))
        assert root.tag.endswith("svg")
        assert len(list(root.iter())) > 50  # a drawn chart, not an empty canvas
    text = "".join(p.text)
    assert hostile.replace("\x1b", "") in text or "alert(1)" in text  # shown as text
    # the recall chart names the hostile class as plain text ($ escaped, not mathematics)
    svgs = [base64.b64decode(s.split(",", 1)[1]).decode() for s in p.images]
    assert any("$x^2$" in s for s in svgs)
    for name in (
        "measurements",
        "arms",
        "reliability",
        "ece",
        "per_class_recall",
        "cost_per_point",
        "agreement",
        "checks",
        "warnings",
    ):
        with open(tmp_path / "out" / f"{name}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        assert len(rows) >= 2, name
    with open(tmp_path / "out" / "measurements.csv", newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [float(g["accuracy"]) for g in got] == pytest.approx([0.55, 0.6, 0.65, 0.7])
    json.dumps(r)  # the check output is plain JSON (it travels over the socket)


def test_report_placeholders_stay_inside_their_chart_and_label_axes_are_whole_numbers():
    """A long 'no comparison yet' note once ran over the y-axis label; the recall chart showed a tick
    at 24.5 labels."""
    import matplotlib

    matplotlib.use("Agg")
    from labelloop.core.text.report import _fig, _int_x, _placeholder

    fig, ax = _fig("AL vs random")
    note = "not enough random-audit labels yet to compare at equal budget: the audit arm has 3 of the 20 it needs"
    _placeholder(ax, note)
    ax.set_ylabel("test accuracy")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box, axes_box = ax.texts[0].get_window_extent(renderer), ax.get_window_extent(renderer)
    assert axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1, (box, axes_box)
    assert not box.overlaps(ax.yaxis.label.get_window_extent(renderer))
    fig2, ax2 = _fig("recall")
    ax2.plot([20, 29], [0.5, 0.7])
    _int_x(ax2)
    fig2.canvas.draw()
    assert all(float(t).is_integer() for t in ax2.get_xticks())


def test_live_labels_to_target_per_arm_with_the_audit_arms_limit_stated():
    """Labels to 90/95/98% of the current accuracy for the AL and random-audit arms at equal budgets,
    from the curves arm_curves measures, with the paired difference's interval; a target no arm
    reaches within the audit arm's size says so, and the limit is printed."""
    from labelloop.core.measure.signs import live_targets, target_lines

    rng = np.random.default_rng(0)
    A, R = [0.70, 0.80, 0.85, 0.86], [0.65, 0.72, 0.80, 0.84]
    boots = [
        (b, np.full(200, a) + rng.normal(0, 0.002, 200), np.full(200, r) + rng.normal(0, 0.002, 200), a, r)
        for b, a, r in zip((20, 40, 60, 80), A, R)
    ]
    ts = live_targets(boots, 0.88, 10, (0.90, 0.95, 0.98))
    by = {t["target"]: t for t in ts}
    assert (by[0.90]["al"], by[0.90]["random"], by[0.90]["saved"]) == (50, 70, 20.0)  # 40 / 60 + 10 cold
    assert (by[0.95]["al"], by[0.95]["random"]) == (70, 90) and by[0.95]["saved_low"] == 20.0
    assert by[0.98]["al"] is None and by[0.98]["random"] is None and by[0.98]["limit"] == 90
    lines = target_lines({"targets": ts})
    assert lines[0].startswith("90% of the current accuracy (0.792): AL at 50 labels, random at 70: AL saves +20")
    assert "neither arm reaches it within the 90 labels each that the audit arm allows" in lines[2]
    assert "the random-audit arm's size" in lines[-1]
    assert target_lines(None) == [] and target_lines({"points": []}) == []
