"""The simulator: verdicts on real data, outputs, and clear errors for bad input."""

import polars as pl
import pytest

from labelloop.core.errors import LabelloopError
from labelloop.core.simulate import SimConfig, format_report, run_simulation, write_outputs
from tests.conftest import ROOT, SHARED, run_cli, write_csv

SAMPLE = ROOT / "sample_data" / "sms_spam.csv"


def test_simulate_sample_margin_beats_random(tmp_path):
    cfg = SimConfig(strategies=["margin", "random"], seed_size=20, batch=20, budget=200, repeats=2)
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
    assert r.verdict.startswith("AL pays off") or r.verdict.startswith("marginal")
    assert set(r.conditions) == {"calibrated", "annotation_dominates", "pool_large_enough"}
    write_outputs(r, tmp_path / "c.parquet", tmp_path / "c.png")
    assert pl.read_parquet(tmp_path / "c.parquet").equals(r.curves)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    text = format_report(r, cfg)
    assert "Verdict:" in text and "labels to target" in text


def test_keyword_seeded_simulation(tmp_path):
    cfg = SimConfig(strategies=["entropy", "random"], seed_size=20, batch=20, budget=60, repeats=1,
                    seed_query="free|prize|win")
    r = run_simulation(SAMPLE, "text", "label", cfg, split_col="split")
    assert r.curves["n_labels"].min() == 20


def _bad(tmp_path, rows, cfg, match):
    f = write_csv(tmp_path / "d.csv", ["text", "label"], rows)
    with pytest.raises(LabelloopError, match=match):
        run_simulation(f, "text", "label", cfg)


def test_one_class_label_column(tmp_path):
    _bad(tmp_path, [[f"t{i}", "ham"] for i in range(50)], SimConfig(["margin"]), "one class only")


def test_data_smaller_than_seed(tmp_path):
    _bad(tmp_path, [[f"t{i}", "ab"[i % 2]] for i in range(30)], SimConfig(["margin"], seed_size=50, budget=60),
         "fewer than --seed-size 50")


def test_unknown_strategy(tmp_path):
    _bad(tmp_path, [[f"t{i}", "ab"[i % 2]] for i in range(30)], SimConfig(["margin", "oracle"]), "unknown strategy name")


def test_budget_larger_than_pool(tmp_path):
    _bad(tmp_path, [[f"t{i}", "ab"[i % 2]] for i in range(100)], SimConfig(["margin"], seed_size=10, budget=500),
         "larger than the pool")


def test_missing_column_and_empty_label(tmp_path):
    f = write_csv(tmp_path / "d.csv", ["body", "label"], [["x", "a"]])
    with pytest.raises(LabelloopError, match="column 'text'"):
        run_simulation(f, "text", "label", SimConfig(["margin"]))
    f = write_csv(tmp_path / "e.csv", ["text", "label"], [["x", "a"], ["y", ""]])
    with pytest.raises(LabelloopError, match="row 2, column 'label' is empty"):
        run_simulation(f, "text", "label", SimConfig(["margin"]))


def test_cli_simulate_writes_outputs(tmp_path):
    r = run_cli("simulate", str(SAMPLE), "--split-col", "split", "--strategies", "margin,random", "--seed-size", "20",
                "--batch", "20", "--budget", "60", "--repeats", "1", "--curves", str(tmp_path / "c.csv"),
                "--chart", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stderr
    assert "Verdict:" in r.stdout and (tmp_path / "c.png").exists()
    assert pl.read_csv(tmp_path / "c.csv").height == 6
    r = run_cli("simulate", str(SAMPLE), "--strategies", "margin,nope")
    assert r.returncode == 2 and "unknown strategy" in r.stderr and "Traceback" not in r.stderr


CLASSIFICATION_SETS = [("sms_spam/sms_spam.csv", None), ("trec/trec6.csv", "split"), ("sst2/sst2.csv", None),
                       ("rt_polarity/rt_polarity.csv", None), ("arsarcasm/arsarcasm_sentiment.csv", "split")]


@pytest.mark.parametrize("rel,split", CLASSIFICATION_SETS)
def test_simulate_runs_on_shared_datasets(rel, split):
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} not present (shared data sets are outside the repository)")
    cfg = SimConfig(strategies=["margin", "random"], seed_size=30, batch=30, budget=90, repeats=1)
    r = run_simulation(path, "text", "label", cfg, split_col=split)
    assert r.curves.height == 6 and r.verdict
