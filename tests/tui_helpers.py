"""Projects for the workstation tests, built once and copied per test."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from labelloop.core.config import CONFIG_NAME
from labelloop.core.loop.al_round import train_and_queue
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project
from tests.conftest import ROOT, write_csv

SAMPLE = list(csv.DictReader(open(ROOT / "sample_data" / "sms_spam.csv", encoding="utf-8")))
TRUTH = {r["id"]: r["label"] for r in SAMPLE}


def build_project(
    path: Path,
    *,
    n_pool: int = 400,
    n_test: int = 150,
    trained: bool = True,
    cfg_edits: tuple = (),
    extra_rows: list | None = None,
) -> Path:
    d = init_project(path, ["ham", "spam"], name="tui-test")
    cfg = d / CONFIG_NAME
    text = cfg.read_text()
    # the seed labels below are another annotator's: without overlap, none of them is owed a second label
    for old, new in (
        ("retrain_every = 25", "retrain_every = 0"),
        ("seed_size = 50", "seed_size = 40"),
        ("overlap_share = 0.1", "overlap_share = 0.0"),
        *cfg_edits,
    ):
        assert old in text, old
        text = text.replace(old, new)
    cfg.write_text(text)
    pool = [r for r in SAMPLE if r["split"] == "pool"][:n_pool]
    test = [r for r in SAMPLE if r["split"] == "test"][:n_test]
    rows = [[r["id"], r["text"]] for r in pool] + (extra_rows or [])
    write_csv(path.parent / f"{path.name}_pool.csv", ["id", "text"], rows)
    write_csv(
        path.parent / f"{path.name}_test.csv",
        ["id", "text", "label", "split"],
        [[r["id"], r["text"], r["label"], "test"] for r in test],
    )
    with Project.open(d) as p:
        import_file(p, path.parent / f"{path.name}_pool.csv", id_col="id")
        import_file(p, path.parent / f"{path.name}_test.csv", id_col="id", label_col="label", split_col="split")
        train_and_queue(p, seed=0)
        if trained:
            from labelloop.core.loop.al_round import queued_items

            for it in queued_items(p):
                p.store.append_event(
                    it["item_id"],
                    "label",
                    "seed-annotator",
                    via="key",
                    labels=[TRUTH[it["item_id"]]],
                    batch_id=it["batch_id"],
                    strategy=it["strategy"],
                    audit=it["audit"],
                )
            train_and_queue(p, seed=1)
    return d


_TEMPLATES: dict = {}


def project_copy(tmp_path: Path, key: str = "default", **kw) -> Path:
    """A fresh copy of a template project (building it once per test session)."""
    if key not in _TEMPLATES:
        import tempfile

        base = Path(tempfile.mkdtemp(prefix=f"labelloop-tpl-{key}-"))
        _TEMPLATES[key] = build_project(base / "proj", **kw)
    dst = tmp_path / "proj"
    shutil.copytree(_TEMPLATES[key], dst)
    return dst


async def press_decisions(pilot, app, *keys: str, timeout: float = 15.0) -> None:
    """Press decision keys as a person does: each once the previous decision is acknowledged (over the
    socket a key pressed while the last decision is still on its way is refused, by design: the next
    item is not on screen yet)."""
    import time

    for key in keys:
        deadline = time.monotonic() + timeout
        while app.link.held:
            assert time.monotonic() < deadline, "a decision was never acknowledged"
            await pilot.pause(0.01)
        await pilot.press(key)
    deadline = time.monotonic() + timeout
    while app.link.held:
        assert time.monotonic() < deadline, "a decision was never acknowledged"
        await pilot.pause(0.01)
