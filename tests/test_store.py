"""The store's views against a plain-Python reading of the event log, and the migrations."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import duckdb
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop.core.store import DB_NAME, MIGRATIONS, SCHEMA_VERSION, Store
from labelloop.core.store.exports import export_parquet
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project

ITEMS = ["a", "b", "c", "d"]
ACTORS = ["import:f.csv", "alice", "bob", "carol"]
LABELS = [["ham"], ["spam"], ["ham", "spam"]]


def reference_final(events: list[dict]) -> dict[str, tuple]:
    """What the final label of each item is, read straight from the rules in store.py."""
    undone = {e["target_event"] for e in events if e["kind"] == "undo"}
    eff = [e for e in events if e["kind"] != "undo" and e["event_id"] not in undone]
    out = {}
    for item in {e["item_id"] for e in eff}:
        lab = [e for e in eff if e["item_id"] == item and e["kind"] == "label"]
        adj = [e for e in eff if e["item_id"] == item and e["kind"] == "adjudicate"]
        if not lab:
            continue  # an item nobody labelled has no final label, even if adjudicated
        latest: dict[str, dict] = {}
        for e in sorted(lab, key=lambda e: e["event_id"]):
            latest[e["actor"]] = e
        per_actor = sorted(latest.values(), key=lambda e: e["event_id"])
        n = len(per_actor)
        agree = len({tuple(e["labels"]) for e in per_actor}) == 1
        last_label = max(lab, key=lambda e: e["event_id"])
        if adj:
            deciding = max(adj, key=lambda e: e["event_id"])
            labels, how = deciding["labels"], "adjudication"
        else:
            deciding = last_label
            if not agree:
                labels, how = None, "unresolved"
            else:
                labels = per_actor[0]["labels"]
                if all(e["via"] == "import" for e in per_actor):
                    how = "import"
                else:
                    how = "agreement" if n > 1 else "single annotator"
        errors = [e["error_category"] for e in per_actor if e.get("error_category")]
        notes = [e["note"] for e in per_actor if e.get("note")]
        out[item] = (
            labels,
            how,
            n,
            deciding["event_id"],
            [e["actor"] for e in per_actor],
            ["|".join(e["labels"]) for e in per_actor],
            [e["via"] for e in per_actor],
            errors or None,
            notes or None,
        )
    return out


@st.composite
def histories(draw):
    """An import (some pool rows labelled, one labelled test row) then random decisions: labels by
    several actors, relabels, adjudications, skips, and undos of anything but an undo, imports included."""
    rows = []
    for n, item in enumerate(ITEMS, start=1):
        labels = draw(st.sampled_from([None, *LABELS]))
        rows.append((n, item, labels))
    decisions = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["label", "label", "label", "adjudicate", "undo", "skip"]))
        d = {
            "kind": kind,
            "item_id": draw(st.sampled_from(ITEMS)),
            "labels": None,
            "via": None,
            "undo_pick": draw(st.integers(0, 10_000)),
            "error_category": draw(st.sampled_from([None, "wrong class"])),
            "note": draw(st.sampled_from([None, "see rule 3"])),
        }
        if kind in ("label", "adjudicate"):
            d["actor"] = draw(st.sampled_from(ACTORS[1:])) if kind == "label" else "carol"
            d["labels"] = draw(st.sampled_from(LABELS))
            d["via"] = "review" if kind == "adjudicate" else "key"
        else:
            d["actor"] = draw(st.sampled_from(ACTORS[1:]))
        decisions.append(d)
    return rows, decisions


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_final_decisions_match_the_rules(history):
    rows, decisions = history
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "f.csv"
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "label", "split"])
            for _n, item, labels in rows:
                w.writerow([item, f"text of {item}", "|".join(labels or []), "pool"])
            w.writerow(["t1", "a test item", "spam", "test"])
        project = Project.open(init_project(Path(tmp) / "p", ["ham", "spam"], multi_label=True))
        try:
            import_file(project, csv_path, id_col="id", label_col="label", split_col="split")
            store = project.store
            # the import wrote one event per labelled pool row, numbered by row, whose actor names the file
            events = [
                {
                    "event_id": n,
                    "item_id": item,
                    "kind": "label",
                    "via": "import",
                    "actor": "import:f.csv",
                    "labels": sorted(labels),
                    "target_event": None,
                }
                for n, item, labels in rows
                if labels
            ]
            assert store.rows("SELECT event_id, item_id, kind, via, actor, labels FROM events ORDER BY event_id") == [
                (e["event_id"], e["item_id"], "label", "import", "import:f.csv", e["labels"]) for e in events
            ]
            for d in decisions:
                undoable = [e["event_id"] for e in events if e["kind"] != "undo"]
                target = undoable[d["undo_pick"] % len(undoable)] if d["kind"] == "undo" and undoable else None
                kind = "label" if d["kind"] == "undo" and target is None else d["kind"]
                labels = d["labels"] or (["ham"] if kind == "label" else None)
                via = d["via"] or ("key" if kind == "label" else None)
                extra = {"error_category": d["error_category"], "note": d["note"]} if kind == "label" else {}
                event_id = store.append_event(
                    d["item_id"], kind, d["actor"], labels=labels, via=via, target_event=target, **extra
                )
                events.append(
                    {
                        "event_id": event_id,
                        "item_id": d["item_id"],
                        "kind": kind,
                        "via": via,
                        "actor": d["actor"],
                        "labels": labels,
                        "target_event": target,
                        **extra,
                    }
                )
            got = {
                r[0]: tuple(r[1:])
                for r in store.rows(
                    """SELECT item_id, labels, decided_by, n_annotations, deciding_event, annotators, annotator_labels,
                          decision_kinds, error_categories, notes
                   FROM final_decisions"""
                )
            }
            assert got == reference_final(events)
            # final_labels is the same decision without the provenance
            fl = {
                r[0]: tuple(r[1:])
                for r in store.rows(
                    "SELECT item_id, labels, decided_by, n_annotations, deciding_event FROM final_labels"
                )
            }
            assert fl == {k: v[:4] for k, v in got.items()}
            # and the export says the same, whichever way each item was decided
            out = Path(tmp) / "out.parquet"
            export_parquet(project, out)
            cols = [
                "labels",
                "decided_by",
                "n_annotations",
                "annotators",
                "annotator_labels",
                "decision_kinds",
                "error_categories",
                "notes",
            ]
            df = pl.read_parquet(out).to_dicts()
            exported = {r["item_id"]: tuple(r[c] for c in cols) for r in df if r["decision"] in ("label", "unresolved")}
            assert exported == {k: (*v[:3], *v[4:]) for k, v in got.items()}
            # items that were only skipped (not undone) have a row of their own
            undone = {e["target_event"] for e in events if e["kind"] == "undo"}
            skipped = {e["item_id"] for e in events if e["kind"] == "skip" and e["event_id"] not in undone}
            assert {r["item_id"] for r in df if r["decision"] == "skip"} == skipped - set(got)
        finally:
            project.close()


def test_version_1_project_migrates_and_keeps_its_decisions(tmp_path):
    """A project written before migration 2 opens, is migrated once, and reads the same labels."""
    db = tmp_path / DB_NAME
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_migrations (version INTEGER, name VARCHAR, applied_at TIMESTAMPTZ)")
    version, name, statements = MIGRATIONS[0]
    for sql in statements:
        con.execute(sql)
    con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
    con.execute("INSERT INTO imports VALUES (1, 'f.csv', 'csv', 3, 3, 0, 1, now(), 'import:f.csv')")
    for n, item in enumerate("abc", start=1):
        con.execute(
            "INSERT INTO items (id, ord, text, split, source_labels, source_file, source_row, import_id, imported_at) "
            "VALUES (?, ?, ?, 'pool', ?, 'f.csv', ?, 1, now())",
            [item, n, f"text {item}", ["spam"] if item == "b" else None, n],
        )
    rows = [
        (1, "a", "label", "key", "alice", ["ham"]),
        (2, "a", "label", "key", "bob", ["spam"]),
        (3, "b", "label", "import", "import:f.csv", ["spam"]),
        (4, "c", "label", "key", "alice", ["ham"]),
        (5, "c", "label", "key", "bob", ["ham"]),
    ]
    for r in rows:
        con.execute(
            "INSERT INTO events (event_id, item_id, kind, via, actor, ts, labels) VALUES (?, ?, ?, ?, ?, now(), ?)",
            list(r),
        )
    before = con.execute(
        "SELECT item_id, labels, decided_by, n_annotations, deciding_event FROM final_labels ORDER BY 1"
    ).fetchall()
    con.close()
    with Store.open(tmp_path) as s:
        assert s.schema_version() == SCHEMA_VERSION
        after = s.rows("SELECT item_id, labels, decided_by, n_annotations, deciding_event FROM final_labels ORDER BY 1")
        assert (
            after
            == before
            == [("a", None, "unresolved", 2, 2), ("b", ["spam"], "import", 1, 3), ("c", ["ham"], "agreement", 2, 5)]
        )
        assert s.scalar("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
    with Store.open(tmp_path) as s:  # opening again applies nothing twice
        assert s.scalar("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
