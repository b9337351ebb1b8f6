"""The simulator: verdicts on real data, outputs, and clear errors for bad input."""

import numpy as np
import polars as pl
import pytest

from labelloop.core.loop.simulate import (
    SimConfig,
    format_report,
    paired_interval,
    quick_metrics,
    read_labelled,
    run_simulation,
    write_outputs,
)
from labelloop.core.util.errors import LabelloopError
from tests.conftest import ROOT, SHARED, run_cli, write_csv

SAMPLE = ROOT / "sample_data" / "sms_spam.csv"


def test_simulate_sample_margin_beats_random(tmp_path):
    cfg = SimConfig(strategies=["margin", "random"], seed_size=20, batch=20, budget=200, repeats=4, features=["tfidf"])
    r = run_simulation(SAMPLE, "text", "label", cfg, split_col="split")
    # 174 pool rows repeat a test message word for word: removed before measuring, and said so
    assert r.test_size == 1110 and r.pool_size == 4464 - 174
    assert any("removed 174 pool rows" in n for n in r.notes)
    assert set(r.curves["strategy"].unique()) == {"margin", "random"}
    assert r.curves.filter(pl.col("strategy") == "margin")["n_labels"].max() == 200
    assert {"accuracy", "macro_f1", "ece", "recall_ham", "recall_spam", "compute_seconds"} <= set(r.curves.columns)
    s = {row["strategy"]: row for row in r.summary.iter_rows(named=True)}
    assert s["margin"]["labels_needed"] < s["random"]["labels_needed"]
    assert r.best_strategy == "margin" and r.saving > 0.2
    # the saving is measured: its paired interval over the 4 repeats excludes zero
    main = next(c for c in r.comparisons if c["a"] == ("tfidf", "margin") and c["b"] == ("tfidf", "random"))
    assert main["labels_saved"]["decided"] and main["labels_saved"]["low"] > 0
    assert r.verdict.startswith("AL pays off") or r.verdict.startswith("marginal")
    assert "fewer labels than random [" in r.verdict
    assert set(r.conditions) == {"calibrated", "annotation_dominates", "pool_large_enough"}
    # the cost condition can fail: 200 money of engineering against labels at 0.10
    assert r.conditions["annotation_dominates"]["holds"] is False and "annotation_dominates" in r.verdict
    assert r.learnable["holds"] and r.learnable["interval"][0] > r.learnable["majority"]
    write_outputs(r, tmp_path / "c.parquet", tmp_path / "c.png")
    assert pl.read_parquet(tmp_path / "c.parquet").equals(r.curves)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    text = format_report(r, cfg)
    assert "Verdict (4 repeats):" in text and "labels to target" in text and "bootstrap interval" in text


def test_keyword_seeded_simulation(tmp_path):
    cfg = SimConfig(
        strategies=["entropy", "random"],
        seed_size=20,
        batch=20,
        budget=60,
        repeats=1,
        seed_query="free|prize|win",
        features=["tfidf"],
    )
    r = run_simulation(SAMPLE, "text", "label", cfg, split_col="split")
    assert r.curves["n_labels"].min() == 20


def _bad(tmp_path, rows, cfg, match):
    f = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    with pytest.raises(LabelloopError, match=match):
        run_simulation(f, "text", "label", cfg)


def test_one_class_label_column(tmp_path):
    _bad(tmp_path, [[f"t{i}", "ham"] for i in range(50)], SimConfig(["margin"]), "one class only")


def test_data_smaller_than_seed(tmp_path):
    _bad(
        tmp_path,
        [[f"t{i}", "ab"[i % 2]] for i in range(30)],
        SimConfig(["margin"], seed_size=50, budget=60),
        "fewer than --seed-size 50",
    )


def test_unknown_strategy(tmp_path):
    _bad(
        tmp_path, [[f"t{i}", "ab"[i % 2]] for i in range(30)], SimConfig(["margin", "oracle"]), "unknown strategy name"
    )


def test_budget_larger_than_pool(tmp_path):
    _bad(
        tmp_path,
        [[f"t{i}", "ab"[i % 2]] for i in range(100)],
        SimConfig(["margin"], seed_size=10, budget=500),
        "larger than the pool",
    )


def test_missing_column_and_empty_label(tmp_path):
    f = write_csv(tmp_path / "d.csv", ["body", "label"], [["x", "a"]])
    with pytest.raises(LabelloopError, match="column 'text'"):
        run_simulation(f, "text", "label", SimConfig(["margin"]))
    f = write_csv(tmp_path / "e.csv", ["text", "label"], [["x", "a"], ["y", ""]])
    with pytest.raises(LabelloopError, match="row 2, column 'label' is empty"):
        run_simulation(f, "text", "label", SimConfig(["margin"]))


def test_cli_simulate_writes_outputs(tmp_path):
    r = run_cli(
        "simulate",
        str(SAMPLE),
        "--split-col",
        "split",
        "--strategies",
        "margin,random",
        "--seed-size",
        "20",
        "--batch",
        "20",
        "--budget",
        "60",
        "--repeats",
        "1",
        "--curves",
        str(tmp_path / "c.csv"),
        "--chart",
        str(tmp_path / "c.png"),
    )
    assert r.returncode == 0, r.stderr
    assert "Verdict (1 repeats):" in r.stdout and (tmp_path / "c.png").exists()
    assert pl.read_csv(tmp_path / "c.csv").height == 6
    r = run_cli("simulate", str(SAMPLE), "--strategies", "margin,nope")
    assert r.returncode == 2 and "unknown strategy" in r.stderr and "Traceback" not in r.stderr


CLASSIFICATION_SETS = [
    ("sms_spam/sms_spam.csv", None),
    ("trec/trec6.csv", "split"),
    ("sst2/sst2.csv", None),
    ("rt_polarity/rt_polarity.csv", None),
    ("arsarcasm/arsarcasm_sentiment.csv", "split"),
]


@pytest.mark.parametrize("rel,split", CLASSIFICATION_SETS)
def test_simulate_runs_on_shared_datasets(rel, split):
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} not present (shared data sets are outside the repository)")
    cfg = SimConfig(
        strategies=["margin", "random"], seed_size=30, batch=30, budget=90, repeats=2, features=["tfidf", "tfidf+embed"]
    )
    r = run_simulation(path, "text", "label", cfg, split_col=split)
    assert r.curves.height == 2 * 2 * 2 * 3 and r.verdict
    assert {c["features"] for c in r.choices} == {"tfidf", "tfidf+embed"}


def test_paired_bootstrap_interval_of_a_known_difference():
    rng = np.random.default_rng(0)
    b = rng.normal(100, 20, size=20)
    a = b + 5 + rng.normal(0, 1, size=20)  # a is 5 higher in every repeat, give or take 1
    iv = paired_interval(a, b)
    assert iv["low"] < 5 < iv["high"] and iv["low"] > 3.5 and iv["high"] < 6.5
    assert iv["decided"] and iv["repeats_needed"] is None
    # no real difference: the interval includes zero and the verdict must not pick a winner
    c = b + rng.normal(0, 3, size=20)
    iv0 = paired_interval(c, b)
    assert iv0["low"] < 0 < iv0["high"] and not iv0["decided"]
    # a small difference with few repeats: undecided, and a number of repeats that would decide it
    d = b[:3] + 1 + rng.normal(0, 2, size=3)
    iv3 = paired_interval(d, b[:3])
    if not iv3["decided"]:
        assert iv3["repeats_needed"] > 3


def test_identical_strategies_are_no_measurable_difference():
    """On a two-class task margin, entropy and least confidence rank items identically: the
    comparison between them must be zero and say "no measurable difference"."""
    cfg = SimConfig(
        strategies=["margin", "entropy", "least_confidence", "random"],
        seed_size=20,
        batch=20,
        budget=100,
        repeats=3,
        features=["tfidf"],
    )
    r = run_simulation(SAMPLE, "text", "label", cfg, split_col="split")
    same = [c for c in r.comparisons if c["b"][1] != "random" and c["a"][0] == c["b"][0] == "tfidf"]
    assert len(same) == 2
    for c in same:
        assert c["labels_saved"]["mean"] == 0 and not c["labels_saved"]["decided"]
        assert c["auc"]["mean"] == pytest.approx(0, abs=1e-12)
    assert format_report(r, cfg).count("no measurable difference") >= 2


def test_shuffled_labels_are_called_nothing_to_learn(tmp_path):
    texts, labels, _ = read_labelled(SAMPLE, "text", "label")
    rng = np.random.default_rng(1)
    shuffled = list(rng.permutation(labels))
    f = write_csv(
        tmp_path / "shuffled.csv", ["text", "label"], [[t, lab] for t, lab in zip(texts[:1500], shuffled[:1500])]
    )
    cfg = SimConfig(strategies=["margin", "random"], seed_size=20, batch=20, budget=60, repeats=2, features=["tfidf"])
    r = run_simulation(f, "text", "label", cfg)
    assert not r.learnable["holds"]
    assert r.verdict.startswith("nothing to learn")


def test_the_seed_set_alone_meeting_the_target_is_said(tmp_path):
    cfg = SimConfig(
        strategies=["margin", "random"],
        seed_size=40,
        batch=20,
        budget=80,
        repeats=2,
        target_frac=0.5,
        features=["tfidf"],
    )
    r = run_simulation(SAMPLE, "text", "label", cfg, split_col="split")
    assert any("seed set alone" in n for n in r.notes)
    assert r.verdict.startswith("inconclusive: the seed set alone")


def test_quick_metrics_match_the_full_evaluation():
    from labelloop.core.engine.features import TextFeaturizer
    from labelloop.core.engine.model import evaluate, fit_model

    texts, labels, _ = read_labelled(SAMPLE, "text", "label")
    X = TextFeaturizer("tfidf").fit(texts).transform_text(texts)
    classes = sorted(set(labels))
    m = fit_model(X[:300], labels[:300], classes, C=10.0, held_out="alo")
    full = evaluate(m, X[300:900], labels[300:900], classes)
    quick = quick_metrics(m, X[300:900], np.array([classes.index(v) for v in labels[300:900]]), classes)
    assert quick["accuracy"] == pytest.approx(full["accuracy"])
    assert quick["macro_f1"] == pytest.approx(full["macro_f1"])
    assert quick["ece"] == pytest.approx(full["ece"])
    assert quick["ece_raw"] == pytest.approx(full["ece_uncalibrated"])
    for c in classes:
        assert quick[f"recall_{c}"] == pytest.approx(full["per_class"][c]["recall"])
