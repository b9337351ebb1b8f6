"""``labelloop demo``: a ready-to-label project built from the bundled SMS spam sample."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import duckdb

from core.config import CONFIG_NAME
from core.importer import import_file
from core.project import Project, init_project

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "sms_spam.csv"


def sample_path() -> Path:
    if not SAMPLE.exists():
        from core.errors import ProjectError
        raise ProjectError(f"the bundled sample {SAMPLE} is missing; run labelloop from a full checkout of the repository.")
    return SAMPLE


def build_demo(project_dir: Path | str, *, sample: Path | None = None) -> tuple[Path, bool]:
    """Create the demo project unless it exists. Returns (dir, created)."""
    project_dir = Path(project_dir)
    if (project_dir / CONFIG_NAME).exists():
        return project_dir, False
    sample = sample or sample_path()
    existed = project_dir.exists()
    init_project(project_dir, ["ham", "spam"], name="sms-spam-demo")
    cfg = project_dir / CONFIG_NAME
    text = cfg.read_text(encoding="utf-8")
    # Keyword seeding suits spam: the first batch mixes matches of this pattern with random items.
    text = text.replace('cold_start = "random"', 'cold_start = "keyword"')
    text = text.replace('seed_query = ""', 'seed_query = "free|prize|win|claim|txt|call now|urgent"')
    text = text.replace("seed_size = 50", "seed_size = 40")
    cfg.write_text(text, encoding="utf-8")
    tmp = Path(tempfile.mkdtemp(prefix="labelloop-demo-"))
    try:
        con = duckdb.connect()
        src = str(sample).replace("'", "''")
        reader = f"read_csv('{src}', header=true, all_varchar=true, delim=',', quote='\"', escape='\"')"
        con.execute(f"COPY (SELECT id, text FROM {reader} WHERE split = 'pool') TO '{tmp / 'pool.parquet'}' (FORMAT parquet)")
        con.execute(f"COPY (SELECT id, text, label, split FROM {reader} WHERE split = 'test') TO '{tmp / 'test.parquet'}' (FORMAT parquet)")
        con.close()
        with Project.open(project_dir) as project:
            import_file(project, tmp / "pool.parquet", id_col="id", actor="import:sms_spam.csv")
            import_file(project, tmp / "test.parquet", id_col="id", label_col="label", split_col="split",
                        actor="import:sms_spam.csv")
            # Fill the queue now (the keyword-seeded cold-start batch), so the workstation opens on an item.
            from core.loop import train_and_queue
            train_and_queue(project, seed=0)
    except BaseException:
        if not existed:  # never delete a folder the user had before
            shutil.rmtree(project_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return project_dir, True
