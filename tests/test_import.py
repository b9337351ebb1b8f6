"""Import: formats, pre-labelled rows, splits, and one test per bad-input case.

Every bad-input test asserts that the message names the file, row and column,
and that the store is exactly as it was (store_fingerprint)."""

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project
from labelloop.core.util.errors import InputFileError, ValidationError
from tests.conftest import ROOT, store_fingerprint, write_csv, write_jsonl

GOOD = [["a1", "win a free prize now", "spam"], ["a2", "see you at lunch", "ham"], ["a3", "no label yet", ""]]


def test_import_csv_with_labels_and_metadata(project, tmp_path):
    f = write_csv(tmp_path / "in.csv", ["id", "text", "label", "lang"], [r + ["en"] for r in GOOD])
    r = import_file(project, f, id_col="id", label_col="label")
    assert (r.rows_read, r.rows_imported, r.rows_rejected, r.labelled) == (3, 3, 0, 2)
    s = project.store
    assert s.rows("SELECT id, text, split, metadata, source_row FROM items ORDER BY ord") == [
        ("a1", "win a free prize now", "pool", '{"lang":"en"}', 1),
        ("a2", "see you at lunch", "pool", '{"lang":"en"}', 2),
        ("a3", "no label yet", "pool", '{"lang":"en"}', 3),
    ]
    # pre-labelled rows are events whose actor names the file
    assert s.rows("SELECT item_id, kind, via, actor, labels FROM events ORDER BY event_id") == [
        ("a1", "label", "import", "import:in.csv", ["spam"]),
        ("a2", "label", "import", "import:in.csv", ["ham"]),
    ]
    assert s.rows("SELECT item_id, labels, decided_by FROM final_labels ORDER BY item_id") == [
        ("a1", ["spam"], "import"),
        ("a2", ["ham"], "import"),
    ]


def test_import_tsv_jsonl_parquet(project, tmp_path):
    import_file(
        project,
        write_csv(tmp_path / "a.tsv", ["id", "text"], [["t1", "tab\tinside? no, quoted"]], delimiter="\t"),
        id_col="id",
    )
    import_file(
        project,
        write_jsonl(tmp_path / "b.jsonl", [{"id": "j1", "text": "json row", "label": "ham", "src": {"k": 1}}]),
        id_col="id",
        label_col="label",
    )
    pl.DataFrame({"id": ["p1", "p2"], "text": ["parquet one", "parquet two"], "n": [1, 2]}).write_parquet(
        tmp_path / "c.parquet"
    )
    import_file(project, tmp_path / "c.parquet", id_col="id")
    rows = dict(project.store.rows("SELECT id, text FROM items"))
    assert rows == {"t1": "tab\tinside? no, quoted", "j1": "json row", "p1": "parquet one", "p2": "parquet two"}
    assert project.store.scalar("SELECT metadata FROM items WHERE id = 'j1'") == '{"src":{"k":1}}'
    assert project.store.scalar("SELECT metadata FROM items WHERE id = 'p2'") == '{"n":"2"}'


def test_splits_and_gold_labels(project, tmp_path):
    f = write_csv(
        tmp_path / "s.csv",
        ["id", "text", "label", "split"],
        [
            ["1", "pool one", "ham", "train"],
            ["2", "held out", "spam", "test"],
            ["3", "gold item", "ham", "gold"],
            ["4", "plain", "", ""],
        ],
    )
    r = import_file(project, f, id_col="id", label_col="label", split_col="split")
    assert r.splits == {"gold": 1, "pool": 2, "test": 1}
    assert project.store.rows("SELECT id, split, gold_label FROM items ORDER BY ord") == [
        ("1", "pool", None),
        ("2", "test", ["spam"]),
        ("3", "gold", ["ham"]),
        ("4", "pool", None),
    ]
    # test and gold labels never enter the loop as annotations
    assert project.store.rows("SELECT item_id FROM events") == [("1",)]


def test_ids_default_to_file_and_row(project, tmp_path):
    f = write_csv(tmp_path / "noid.csv", ["text"], [["first"], ["second"]])
    import_file(project, f)
    assert project.store.rows("SELECT id FROM items ORDER BY ord") == [("noid.csv:1",), ("noid.csv:2",)]
    with pytest.raises(ValidationError, match=r"row 1, column '\(row id\)': id 'noid.csv:1' is already in the project"):
        import_file(project, f)


def test_multi_label_import(tmp_path):
    from labelloop.core.store.project import init_project

    d = init_project(tmp_path / "ml", ["sports", "politics", "tech"], multi_label=True)
    with Project.open(d) as p:
        f = write_csv(tmp_path / "m.csv", ["id", "text", "tags"], [["1", "x", "sports|tech"], ["2", "y", "politics"]])
        import_file(p, f, id_col="id", label_col="tags")
        assert p.store.rows("SELECT item_id, labels FROM events ORDER BY event_id") == [
            ("1", ["sports", "tech"]),
            ("2", ["politics"]),
        ]


# --- bad input: one test per case --------------------------------------------------------------


def _assert_rejected(project, path, row, column, fragment, **kw):
    before = store_fingerprint(project)
    with pytest.raises(ValidationError) as exc:
        import_file(project, path, **kw)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"row {row}" in msg, msg
    assert f"column '{column}'" in msg, msg
    assert fragment in msg, msg
    assert "nothing was imported" in msg
    assert store_fingerprint(project) == before
    return exc.value


def test_bad_missing_column(project, tmp_path):
    f = write_csv(tmp_path / "m.csv", ["id", "body"], [["1", "x"]])
    before = store_fingerprint(project)
    with pytest.raises(
        ValidationError,
        match=r"m.csv: column 'text': column is missing \(asked for by --text-col; the file has: id, body\)",
    ):
        import_file(project, f, id_col="id")
    assert store_fingerprint(project) == before


def test_bad_missing_field_in_jsonl_row(project, tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [{"id": "1", "text": "ok"}, {"id": "2", "body": "no text"}])
    _assert_rejected(project, f, 2, "text", "text is missing", id_col="id")


def test_bad_empty_text(project, tmp_path):
    f = write_csv(tmp_path / "e.csv", ["id", "text"], [["1", "fine"], ["2", ""]])
    _assert_rejected(project, f, 2, "text", "empty or only whitespace", id_col="id")


def test_bad_whitespace_only_text(project, tmp_path):
    f = write_csv(tmp_path / "w.csv", ["id", "text"], [["1", "fine"], ["2", "ok"], ["3", " \t\n\u3000\u00a0 "]])
    _assert_rejected(project, f, 3, "text", "empty or only whitespace", id_col="id")


def test_bad_duplicate_id_in_file(project, tmp_path):
    f = write_csv(tmp_path / "d.csv", ["id", "text"], [["1", "a"], ["2", "b"], ["1", "c"]])
    e = _assert_rejected(project, f, 3, "id", "id '1' repeats row 1", id_col="id")
    assert e.total == 1


def test_bad_duplicate_id_against_store(project, tmp_path):
    import_file(project, write_csv(tmp_path / "first.csv", ["id", "text"], [["x9", "already here"]]), id_col="id")
    f = write_csv(tmp_path / "second.csv", ["id", "text"], [["n1", "new"], ["x9", "again"]])
    _assert_rejected(project, f, 2, "id", "id 'x9' is already in the project", id_col="id")


def test_bad_invalid_utf8_csv(project, tmp_path):
    f = tmp_path / "u.csv"
    f.write_bytes(b'id,text\n1,"fine\nmultiline"\n2,caf\xe9 latin-1\n3,ok\n')
    _assert_rejected(project, f, 2, "text", "invalid UTF-8", id_col="id")


def test_bad_invalid_utf8_jsonl(project, tmp_path):
    f = tmp_path / "u.jsonl"
    f.write_bytes(b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "bad \xff byte"}\n')
    _assert_rejected(project, f, 2, "text", "invalid UTF-8", id_col="id")


def test_bad_label_outside_label_set(project, tmp_path):
    f = write_csv(tmp_path / "l.csv", ["id", "text", "label"], [["1", "a", "ham"], ["2", "b", "eggs"]])
    _assert_rejected(
        project,
        f,
        2,
        "label",
        "label 'eggs' is not one of the project's labels (ham, spam)",
        id_col="id",
        label_col="label",
    )


def test_bad_text_over_size_limit(project, tmp_path):
    f = write_csv(tmp_path / "big.csv", ["id", "text"], [["1", "short"], ["2", "y" * 100_001]])
    _assert_rejected(project, f, 2, "text", "100001 characters, over the project limit of 100000", id_col="id")


def test_bad_split_value(project, tmp_path):
    f = write_csv(tmp_path / "sp.csv", ["id", "text", "split"], [["1", "a", "test"], ["2", "b", "validation"]])
    _assert_rejected(project, f, 2, "split", "split 'validation' is not one of", id_col="id", split_col="split")


def test_bad_ragged_csv_row(project, tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("id,text\n1,ok\n2,too,many,fields\n")
    before = store_fingerprint(project)
    with pytest.raises(ValidationError, match=r"r.csv: row 2: has 4 fields, the header has 2"):
        import_file(project, f, id_col="id")
    assert store_fingerprint(project) == before


def test_bad_file_type_and_missing_file(project, tmp_path):
    (tmp_path / "x.xlsx").write_text("nope")
    with pytest.raises(InputFileError, match="unknown file type"):
        import_file(project, tmp_path / "x.xlsx")
    with pytest.raises(InputFileError, match="does not exist"):
        import_file(project, tmp_path / "none.csv")


def test_all_problems_are_listed(project, tmp_path):
    f = write_csv(
        tmp_path / "many.csv", ["id", "text", "label"], [["1", "", "ham"], ["2", "ok", "eggs"], ["2", "dup", "ham"]]
    )
    with pytest.raises(ValidationError) as exc:
        import_file(project, f, id_col="id", label_col="label")
    got = [(p.row, p.column) for p in exc.value.problems]
    assert got == [(1, "text"), (2, "label"), (3, "id")]
    assert "2 more problem(s)" in str(exc.value)


def test_row_numbers_follow_the_file_in_a_large_file(project, tmp_path):
    """Rows are numbered by the staging table's rowid; on a file that DuckDB reads in parallel and
    stores in several row groups the numbers must still be the file's (in errors and in source_row)."""
    n = 400_000
    f = tmp_path / "large.csv"
    with open(f, "w", encoding="utf-8") as out:
        out.write("id,text,label\n")
        for i in range(1, n + 1):
            text = "" if i in (123_457, 333_333) else f"row {i} " + "words " * 8
            out.write(f"r{i},{text},{'spam' if i % 3 == 0 else 'ham'}\n")
    with pytest.raises(ValidationError) as exc:
        import_file(project, f, id_col="id", label_col="label")
    assert [(p.row, p.column) for p in exc.value.problems] == [(123_457, "text"), (333_333, "text")]
    f.write_text(f.read_text().replace("r123457,,", "r123457,fixed,").replace("r333333,,", "r333333,fixed,"))
    import_file(project, f, id_col="id", label_col="label")
    s = project.store
    assert s.scalar("SELECT count(*) FROM items") == n
    assert s.scalar("SELECT count(*) FROM items WHERE id <> 'r' || source_row::VARCHAR") == 0
    # each import event carries its row's label
    assert (
        s.scalar("""SELECT count(*) FROM events e JOIN items i ON i.id = e.item_id
                       WHERE e.labels <> (CASE WHEN i.source_row % 3 = 0 THEN ['spam'] ELSE ['ham'] END)""")
        == 0
    )


def test_skip_invalid_imports_valid_rows_and_writes_rejects(project, tmp_path):
    f = tmp_path / "mixed.csv"
    f.write_bytes(b"id,text,label\n1,good one,ham\n2,   ,ham\n3,bad \xff,spam\n4,good two,eggs\n5,good three,spam\n")
    r = import_file(project, f, id_col="id", label_col="label", skip_invalid=True)
    assert (r.rows_read, r.rows_imported, r.rows_rejected, r.labelled) == (5, 2, 3, 2)
    assert project.store.rows("SELECT id, source_row FROM items ORDER BY ord") == [("1", 1), ("5", 5)]
    rejects = pl.read_csv(r.rejects_file)
    assert rejects["row"].to_list() == [2, 3, 4]
    assert rejects["column"].to_list() == ["text", "text", "label"]
    assert "invalid UTF-8" in rejects["reason"][1]
    assert project.store.scalar("SELECT rows_rejected FROM imports") == 3


def test_kill_9_during_import_leaves_store_unchanged(project_dir, tmp_path):
    rows = [[f"k{i}", f"text number {i}", "ham" if i % 2 else ""] for i in range(20_000)]
    f = write_csv(tmp_path / "big.csv", ["id", "text", "label"], rows)
    with Project.open(project_dir) as p:
        import_file(p, write_csv(tmp_path / "pre.csv", ["id", "text"], [["keep", "existing item"]]), id_col="id")
        before = store_fingerprint(p)
    marker = tmp_path / "reached"
    env = {**os.environ, "LABELLOOP_FAULT": "import-before-commit", "LABELLOOP_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelloop.tui.cli",
            "import",
            str(project_dir),
            str(f),
            "--id-col",
            "id",
            "--label-col",
            "label",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, "import ended before the fault point"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Project.open(project_dir) as p:
        assert store_fingerprint(p) == before
        # and the project still works
        import_file(p, f, id_col="id", label_col="label")
        assert p.store.item_count() == 20_001


def test_ids_are_stored_in_nfc_and_a_collision_names_both_rows(project, tmp_path):
    """'é' as one character and as e + combining accent are one id: stored in NFC, counted, and two rows
    that meet after normalisation are refused with one sentence naming both rows."""
    import unicodedata

    nfd = unicodedata.normalize("NFD", "café-1")
    nfc = unicodedata.normalize("NFC", "café-1")
    assert nfd != nfc
    f = write_csv(tmp_path / "nfd.csv", ["id", "text"], [[nfd, "first"], ["plain", "second"]])
    r = import_file(project, f, id_col="id")
    assert r.rows_imported == 2 and r.duplicates.get("ids_nfc") == 1
    assert any("stored in NFC" in line for line in r.duplicate_lines())
    ids = {row[0] for row in project.store.rows("SELECT id FROM items")}
    assert nfc in ids and nfd not in ids
    # the same id typed the other way, in one file: refused, both rows named
    g = write_csv(
        tmp_path / "both.csv", ["id", "text"], [["x1", "a"], [nfc.replace("1", "2"), "b"], [nfd.replace("1", "2"), "c"]]
    )
    with pytest.raises(ValidationError) as e:
        import_file(project, g, id_col="id")
    msg = str(e.value)
    assert "row 3" in msg and "is the id of row 2 written in another Unicode form" in msg
    # and an NFD spelling of an id already in the project is that id
    h = write_csv(tmp_path / "again.csv", ["id", "text"], [[nfd, "third"]])
    with pytest.raises(ValidationError) as e:
        import_file(project, h, id_col="id")
    assert "is already in the project" in str(e.value)
