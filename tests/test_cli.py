"""The CLI as a user runs it: exit codes, one-sentence errors, status and demo."""

import json

import polars as pl

from tests.conftest import run_cli, write_csv


def test_cli_error_is_one_sentence_exit_2(tmp_path):
    r = run_cli("import", str(tmp_path / "nope"), "x.csv")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("labelloop: ")


def test_cli_validation_error_names_row_and_column(tmp_path):
    assert run_cli("init", str(tmp_path / "p"), "--labels", "ham,spam").returncode == 0
    f = write_csv(tmp_path / "bad.csv", ["id", "text", "label"], [["1", "ok", "ham"], ["2", "x", "eggs"]])
    r = run_cli("import", str(tmp_path / "p"), str(f), "--id-col", "id", "--label-col", "label")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "bad.csv: row 2, column 'label'" in r.stderr
    r = run_cli("--debug", "import", str(tmp_path / "p"), str(f), "--id-col", "id", "--label-col", "label")
    assert "Traceback" in r.stderr


def test_cli_init_import_status_export(tmp_path):
    p = tmp_path / "p"
    assert run_cli("init", str(p), "--labels", "ham,spam").returncode == 0
    f = write_csv(
        tmp_path / "in.csv",
        ["id", "text", "label", "split"],
        [["1", "a", "ham", "pool"], ["2", "b", "spam", "pool"], ["3", "c", "", "pool"], ["4", "d", "ham", "test"]],
    )
    r = run_cli("import", str(p), str(f), "--id-col", "id", "--label-col", "label", "--split-col", "split")
    assert r.returncode == 0, r.stderr
    assert "Imported 4 of 4 rows" in r.stdout
    r = run_cli("status", str(p), "--json")
    st = json.loads(r.stdout)
    assert st["items"] == {"total": 4, "pool": 3, "test": 1, "gold": 0}
    assert st["final_labels"] == {"ham": 1, "spam": 1}
    assert st["pool_unlabelled"] == 1
    assert st["gold_labels"] == [{"split": "test", "label": "ham", "count": 1}]
    assert st["latest_model"] is None
    r = run_cli("status", str(p))
    assert "Items" in r.stdout and "pool 3" in r.stdout
    r = run_cli("export", str(p), str(tmp_path / "o.parquet"))
    assert r.returncode == 0, r.stderr
    assert sorted(pl.read_parquet(tmp_path / "o.parquet")["item_id"].to_list()) == ["1", "2"]


def test_cli_init_bad_labels(tmp_path):
    r = run_cli("init", str(tmp_path / "p"), "--labels", "ham,,spam")
    assert r.returncode == 2 and "empty label" in r.stderr


def test_demo_builds_sample_project(tmp_path):
    r = run_cli("demo", str(tmp_path / "demo"), "--no-open")
    assert r.returncode == 0, r.stderr
    st = json.loads(run_cli("status", str(tmp_path / "demo"), "--json").stdout)
    # --dedupe: 382 pool and 21 test rows repeat an earlier text (174 pool rows repeat a test text)
    assert st["items"] == {"total": 5171, "pool": 4082, "test": 1089, "gold": 0}
    assert st["pool_unlabelled"] == 4082  # pool labels are hidden: they are what the annotator labels
    assert {g["label"]: g["count"] for g in st["gold_labels"]} == {"ham": 940, "spam": 149}
    # running demo again re-uses the project
    assert run_cli("demo", str(tmp_path / "demo"), "--no-open").returncode == 0


def test_cli_train_next_and_model_transfer(tmp_path):
    d = tmp_path / "demo"
    assert run_cli("demo", str(d), "--no-open").returncode == 0
    r = run_cli("train", str(d), "--seed", "1")
    assert r.returncode == 0, r.stderr
    # the demo queued batch 1 itself; with no labels, train queues another cold-start batch
    assert "cold-start batch" in r.stdout and "Queued batch 2: 40 items" in r.stdout
    r = run_cli("next", str(d), "--n", "3", "--json")
    items = json.loads(r.stdout)
    assert len(items) == 3 and all(i["strategy"].startswith("cold start: keyword") for i in items)
    r = run_cli("next", str(d), "--n", "2")
    assert "cold start: keyword" in r.stdout
    r = run_cli("model", "export", str(d), str(tmp_path / "m.pkl"))
    assert r.returncode == 2 and "no model yet" in r.stderr
    r = run_cli("train", str(d), "--strategy", "nonsense")
    assert r.returncode == 2 and "unknown strategy 'nonsense'" in r.stderr


def test_check_and_report_on_a_project_without_items_say_what_to_do(tmp_path):
    d = tmp_path / "empty"
    assert run_cli("init", str(d), "--labels", "a,b").returncode == 0
    for cmd in (("check", str(d)), ("report", str(d), "--out", str(tmp_path / "rep"))):
        r = run_cli(*cmd)
        assert r.returncode == 2 and "has no items yet" in r.stderr and "labelloop import" in r.stderr, r.stderr
        assert "unexpected" not in r.stderr and "failed on" not in r.stderr


def test_report_out_must_be_a_folder_not_a_page_name(tmp_path):
    d = tmp_path / "empty"
    assert run_cli("init", str(d), "--labels", "a,b").returncode == 0
    r = run_cli("report", str(d), "--out", str(tmp_path / "report.html"))
    assert r.returncode == 2 and "must name a folder" in r.stderr
    assert not (tmp_path / "report.html").exists()
