"""``labelloop model export/import``: move a trained model, with its featurizer, to another project.

An imported model becomes the new project's first scorer: until the project has
labels of two classes, its queue is ranked by the imported model's uncertainty.
The file is a Python pickle: import only model files you trust.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

from core.errors import LabelloopError
from core.project import Project
from core.store import utcnow

MAGIC = "labelloop-model/1"


def export_model(project: Project, out: Path | str, version: int | None = None) -> tuple[Path, int]:
    from core.loop import latest_model_version, load_model
    version = version or project.store.scalar("SELECT max(version) FROM models WHERE origin = 'trained'") \
        or latest_model_version(project)
    if version is None:
        raise LabelloopError("the project has no model yet; run labelloop train first.")
    art = load_model(project, version)
    out = Path(out)
    if not out.parent.exists():
        raise LabelloopError(f"{out.parent} does not exist.")
    metrics = project.store.scalar("SELECT metrics FROM models WHERE version = ?", [version])
    bundle = {"magic": MAGIC, "model": art["model"], "featurizer": art["featurizer"], "labels": project.config.labels,
              "source_project": project.config.name, "version": version,
              "test_metrics": json.loads(metrics) if metrics else None}
    tmp = out.with_name("." + out.name + ".tmp")
    tmp.write_bytes(pickle.dumps(bundle))
    os.replace(tmp, out)
    return out, version


def import_model(project: Project, path: Path | str) -> int:
    path = Path(path)
    if not path.exists():
        raise LabelloopError(f"{path} does not exist.")
    try:
        with open(path, "rb") as f:
            bundle = pickle.load(f)
    except Exception as exc:  # a wrong or damaged file: say so in one sentence
        raise LabelloopError(f"{path} is not a labelloop model file ({type(exc).__name__}).") from None
    if not isinstance(bundle, dict) or bundle.get("magic") != MAGIC:
        raise LabelloopError(f"{path} is not a labelloop model file (made by labelloop model export).")
    unknown = [c for c in bundle["model"].classes_ if c not in project.config.labels]
    if unknown:
        raise LabelloopError(f"{path}: the model predicts label(s) {', '.join(unknown)} that this project does not have "
                             f"(project labels: {', '.join(project.config.labels)}).")
    s = project.store
    version = int(s.scalar("SELECT coalesce(max(version), 0) + 1 FROM models"))
    project.models_dir.mkdir(exist_ok=True)
    artifact = f"model_v{version}.pkl"
    tmp = project.models_dir / (artifact + ".tmp")
    tmp.write_bytes(pickle.dumps({"model": bundle["model"], "featurizer": bundle["featurizer"],
                                  "labels": bundle["labels"], "features_fingerprint": None}))
    os.replace(tmp, project.models_dir / artifact)
    m = bundle["model"]
    s.con.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [version, utcnow(), 0, m.classes_, m.calibration,
                   m.temperature_ if m.calibration == "temperature" else None, None, None,
                   json.dumps({"imported_from": str(path), "source_project": bundle.get("source_project"),
                               "source_version": bundle.get("version"), "source_test_metrics": bundle.get("test_metrics")}),
                   artifact, "imported"])
    return version
