"""Export: provenance columns, exact round trip (property test), atomic writes."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop.core.store.exports import export_parquet
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project
from labelloop.core.util.errors import LabelloopError
from tests.conftest import ROOT, write_csv, write_jsonl

FINAL_COLUMNS = [
    "item_id",
    "text",
    "label",
    "labels",
    "decision",
    "decided_by",
    "n_annotations",
    "annotators",
    "annotator_labels",
    "labelled_at",
    "durations_ms",
    "decision_kinds",
    "error_categories",
    "notes",
    "deciding_kind",
    "decided_by_actor",
    "decided_at",
    "model_version",
    "suggestion",
    "shown_probs",
    "suggestion_hidden",
    "batch_id",
    "strategy",
    "score",
    "rank",
    "percentile",
    "audit",
    "n_skips",
    "n_flags",
    "skip_flag_notes",
    "split",
    "metadata",
    "source_file",
    "source_row",
    "imported_at",
    "rationale",
]


def _setup(project, tmp_path):
    f = write_csv(
        tmp_path / "in.csv",
        ["id", "text", "label"],
        [
            ["i1", "imported with a label", "spam"],
            ["i2", "single annotator", ""],
            ["i3", "two agree", ""],
            ["i4", "two disagree", ""],
            ["i5", "adjudicated", ""],
            ["i6", "never labelled", ""],
            ["i7", "undone", ""],
            ["i8", "skipped", ""],
            ["i9", "flagged", ""],
            ["i10", "skip undone", ""],
        ],
    )
    import_file(project, f, id_col="id", label_col="label")
    s = project.store
    probs = {"ham": 0.8, "spam": 0.2}
    s.append_event(
        "i2",
        "label",
        "alice",
        via="correction",
        labels=["spam"],
        duration_ms=1500.0,
        error_category="wrong class",
        note="says 'free'",
        model_version=3,
        shown_probs=probs,
        suggestion="ham",
        suggestion_hidden=False,
        batch_id=7,
        strategy="margin",
        score=0.6,
        rank=2,
        percentile=99.5,
        audit=False,
    )
    s.append_event("i3", "label", "alice", via="key", labels=["spam"], duration_ms=400.0)  # changed her mind:
    s.append_event("i3", "label", "alice", via="key", labels=["ham"], duration_ms=900.0)  # her latest label counts
    s.append_event("i3", "label", "bob", via="accept", labels=["ham"], duration_ms=700.0, audit=True, strategy="random")
    s.append_event("i4", "label", "alice", via="key", labels=["ham"])
    s.append_event("i4", "label", "bob", via="key", labels=["spam"])
    s.append_event("i5", "label", "alice", via="key", labels=["ham"], batch_id=4, strategy="margin", audit=False)
    s.append_event("i5", "label", "bob", via="key", labels=["spam"], batch_id=4, strategy="margin", audit=False)
    s.append_event("i5", "adjudicate", "carol", via="review", labels=["spam"], note="link to prize")
    e = s.append_event("i7", "label", "alice", via="key", labels=["ham"])
    s.append_event("i7", "undo", "alice", target_event=e)
    s.append_event("i8", "skip", "alice", note="cannot tell", batch_id=7, strategy="margin", audit=False)
    s.append_event("i9", "flag", "bob", note="guideline gap: links", batch_id=7, strategy="random", audit=True)
    s.append_event("i9", "skip", "alice")
    s.append_event("i2", "flag", "bob", note="check this one")
    e = s.append_event("i10", "skip", "alice", note="oops")
    s.append_event("i10", "undo", "alice", target_event=e)


def test_export_final_provenance(project, tmp_path):
    _setup(project, tmp_path)
    r = export_parquet(project, tmp_path / "out.parquet")
    df = pl.read_parquet(tmp_path / "out.parquet")
    assert df.columns == FINAL_COLUMNS
    assert r.rows == df.height == 7
    rows = {d["item_id"]: d for d in df.to_dicts()}
    assert set(rows) == {"i1", "i2", "i3", "i4", "i5", "i8", "i9"}  # i6 never decided, i7 and i10 undone
    assert {k: v["decision"] for k, v in rows.items()} == {
        "i1": "label",
        "i2": "label",
        "i3": "label",
        "i4": "unresolved",
        "i5": "label",
        "i8": "skip",
        "i9": "flag",
    }
    i8, i9 = rows["i8"], rows["i9"]
    assert (i8["label"], i8["notes"], i8["n_skips"], i8["n_flags"], i8["annotators"]) == (
        None,
        ["cannot tell"],
        1,
        0,
        ["alice"],
    )
    assert (i8["strategy"], i8["batch_id"], i8["decided_by_actor"]) == ("margin", 7, "alice")
    assert (i9["notes"], i9["n_flags"], i9["n_skips"], i9["decision_kinds"]) == (
        ["guideline gap: links"],
        1,
        1,
        ["flag", "skip"],
    )
    # a labelled item that someone flagged keeps its label and shows the flag
    assert (rows["i2"]["decision"], rows["i2"]["n_flags"], rows["i2"]["skip_flag_notes"]) == (
        "label",
        1,
        ["check this one"],
    )
    assert (rows["i1"]["label"], rows["i1"]["decided_by"], rows["i1"]["annotators"]) == (
        "spam",
        "import",
        ["import:in.csv"],
    )
    i2 = rows["i2"]
    assert (i2["label"], i2["decided_by"], i2["error_categories"], i2["notes"]) == (
        "spam",
        "single annotator",
        ["wrong class"],
        ["says 'free'"],
    )
    assert (i2["model_version"], i2["suggestion"], json.loads(i2["shown_probs"]), i2["suggestion_hidden"]) == (
        3,
        "ham",
        {"ham": 0.8, "spam": 0.2},
        False,
    )
    assert (i2["strategy"], i2["score"], i2["rank"], i2["percentile"], i2["audit"], i2["batch_id"]) == (
        "margin",
        0.6,
        2,
        99.5,
        False,
        7,
    )
    assert i2["durations_ms"] == [1500.0]
    assert (rows["i3"]["decided_by"], rows["i3"]["annotators"], rows["i3"]["annotator_labels"]) == (
        "agreement",
        ["alice", "bob"],
        ["ham", "ham"],
    )
    # an unresolved item names nobody as its decider (bob only labelled last)
    assert (rows["i4"]["label"], rows["i4"]["decided_by"], rows["i4"]["decided_by_actor"]) == (None, "unresolved", None)
    assert rows["i4"]["decided_at"] is None
    assert (rows["i5"]["label"], rows["i5"]["decided_by"], rows["i5"]["decided_by_actor"]) == (
        "spam",
        "adjudication",
        "carol",
    )
    # an adjudicated item keeps the queue provenance of its labels (the adjudication has none of its own)
    assert (rows["i5"]["batch_id"], rows["i5"]["strategy"], rows["i5"]["audit"]) == (4, "margin", False)
    # columns that no decision filled are null, not missing
    assert rows["i3"]["error_categories"] is None and rows["i3"]["shown_probs"] is None
    assert df.schema["score"] == pl.Float64 and df.schema["audit"] == pl.Boolean


def test_export_events(project, tmp_path):
    _setup(project, tmp_path)
    export_parquet(project, tmp_path / "ev.parquet", what="events")
    df = pl.read_parquet(tmp_path / "ev.parquet")
    stored = project.store.rows("SELECT event_id, item_id, kind, actor FROM events ORDER BY event_id")
    assert list(df.select("event_id", "item_id", "kind", "actor").iter_rows()) == stored
    assert df.filter(pl.col("kind") == "undo")["target_event"].to_list() != [None]


def test_failed_export_leaves_no_file(project, tmp_path):
    with pytest.raises(LabelloopError, match="does not exist"):
        export_parquet(project, tmp_path / "missing" / "x.parquet")
    with pytest.raises(LabelloopError, match="name the file .parquet"):
        export_parquet(project, tmp_path / "x.csv")
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*tmp"))


def test_kill_9_during_export_leaves_no_file_under_target(project_dir, tmp_path):
    with Project.open(project_dir) as p:
        _setup(p, tmp_path)
    target = tmp_path / "final.parquet"
    marker = tmp_path / "reached"
    env = {**os.environ, "LABELLOOP_FAULT": "export-before-rename", "LABELLOOP_FAULT_MARKER": str(marker)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelloop.tui.cli", "export", str(project_dir), str(target)], cwd=ROOT, env=env
    )
    deadline = time.time() + 60
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()


# --- round trip ------------------------------------------------------------------------------

ARABIC = "مرحبا بالعالم، هذا نص عربي مع أرقام ١٢٣ وتشكيل: سَلامٌ"
text_chars = st.characters(blacklist_categories=("Cs",))
texts = st.one_of(
    st.text(text_chars, min_size=1, max_size=200),
    st.sampled_from(
        [
            ARABIC,
            "emoji 👩🏽‍💻🎉 and ZWJ",
            "quotes \" ' `` and, commas",
            "line1\nline2\r\nline3\r",
            "[bold]markup[/bold] [@click=app.quit]x[/]",
            "\x1b[31mred\x1b[0m",
            "  padded  ",
            "tab\there",
        ]
    ),
    st.builds(lambda s, n: (s * n)[:99_000], st.text(text_chars, min_size=1, max_size=50), st.integers(200, 5000)),
).filter(lambda t: t.strip() and not all(c.isspace() for c in t))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(texts, min_size=1, max_size=6), fmt=st.sampled_from(["csv", "jsonl"]))
def test_export_round_trips_text_exactly(batch, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        d = init_project(tmp / "p", ["ham", "spam"])
        rows = [{"id": f"r{i}", "text": t, "label": "spam" if i % 2 else "ham"} for i, t in enumerate(batch)]
        if fmt == "csv":
            f = write_csv(tmp / "in.csv", ["id", "text", "label"], [[r["id"], r["text"], r["label"]] for r in rows])
        else:
            f = write_jsonl(tmp / "in.jsonl", rows)
        with Project.open(d) as p:
            import_file(p, f, id_col="id", label_col="label")
            stored = p.store.rows("SELECT id, text FROM items ORDER BY ord")
            assert stored == [(r["id"], r["text"]) for r in rows]
            export_parquet(p, tmp / "out.parquet")
        df = pl.read_parquet(tmp / "out.parquet").sort("source_row")
        assert df.select("item_id", "text", "label").rows() == [(r["id"], r["text"], r["label"]) for r in rows]
