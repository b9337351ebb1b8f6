"""``labelloop model export/import``: move a trained model, with its featurizer, to another project.

An imported model becomes the new project's first scorer: until the project has
labels of two classes, its queue is ranked by the imported model's uncertainty.

Model files are in labelloop's safe format (core/engine/artifacts.py: numbers and JSON,
never a pickle), so importing one cannot run code. A pickle bundle written by an
older labelloop is refused unless the user passes ``--trust`` (which means: I wrote
this file or trust whoever did, since loading a pickle can run any code); it is then
converted to the safe format on the way in, and nothing is ever unpickled again.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from labelloop.core.engine.artifacts import ArtifactError
from labelloop.core.engine.modelfile import read_model_file, save_model_file
from labelloop.core.store import rounds
from labelloop.core.store.project import Project
from labelloop.core.util.errors import LabelloopError

MAGIC = "labelloop-model/1"


def export_model(project: Project, out: Path | str, version: int | None = None) -> tuple[Path, int]:
    from labelloop.core.loop.al_round import latest_model_version, load_model

    version = version or rounds.latest_trained_version(project.store) or latest_model_version(project)
    if version is None:
        raise LabelloopError("the project has no model yet; run labelloop train first.")
    art = load_model(project, version)
    out = Path(out)
    if not out.parent.exists():
        raise LabelloopError(f"{out.parent} does not exist.")
    if out.is_dir():
        raise LabelloopError(f"{out} is a folder; give a file name, e.g. model.npz.")
    save_model_file(
        out,
        art["model"],
        art["featurizer"],
        {
            "magic": MAGIC,
            "labels": project.config.labels,
            "source_project": project.config.name,
            "version": version,
            "test_metrics": rounds.model_metrics(project.store, version),
        },
    )
    return out, version


def _read_trusted_pickle(path: Path) -> dict:
    """A pickle bundle from an older labelloop; only with --trust (unpickling can run any code)."""
    import pickle

    try:
        with open(path, "rb") as f:
            bundle = pickle.load(f)  # noqa: S301 - the user vouched for this file with --trust
    except Exception as exc:
        raise LabelloopError(f"{path} is not a labelloop model file ({type(exc).__name__}).") from None
    if (
        not isinstance(bundle, dict)
        or bundle.get("magic") != MAGIC
        or "model" not in bundle
        or "featurizer" not in bundle
    ):
        raise LabelloopError(f"{path} is not a labelloop model file (made by labelloop model export).")
    return {
        "model": bundle["model"],
        "featurizer": bundle["featurizer"],
        "meta": {k: bundle.get(k) for k in ("labels", "source_project", "version", "test_metrics")},
    }


def import_model(project: Project, path: Path | str, *, trust: bool = False) -> int:
    path = Path(path)
    if not path.exists():
        raise LabelloopError(f"{path} does not exist.")
    if not path.is_file():
        raise LabelloopError(f"{path} is not a file.")
    if zipfile.is_zipfile(path):
        art = read_model_file(path)
        if art["meta"].get("magic") != MAGIC:
            raise LabelloopError(f"{path} is not a labelloop model file (made by labelloop model export).")
    elif trust:
        art = _read_trusted_pickle(path)
    else:
        raise ArtifactError(
            f"{path} is not in labelloop's safe model format (it may be a pickle from an older "
            "labelloop, and loading a pickle can run code). If you made this file yourself or trust "
            "whoever did, import it with --trust; it is then stored in the safe format."
        )
    model, meta = art["model"], art["meta"]
    classes = list(getattr(model, "classes_", []))
    unknown = [c for c in classes if c not in project.config.labels]
    if unknown:
        raise LabelloopError(
            f"{path}: the model predicts label(s) {', '.join(unknown)} that this project does not have "
            f"(project labels: {', '.join(project.config.labels)})."
        )
    s = project.store
    version = rounds.next_model_version(s)
    project.models_dir.mkdir(exist_ok=True)
    artifact = f"model_v{version}.npz"
    save_model_file(
        project.models_dir / artifact,
        model,
        art["featurizer"],
        {"labels": meta.get("labels"), "features_fingerprint": None, "version": version},
    )
    rounds.insert_model(
        s,
        version,
        n_train=0,
        classes=classes,
        calibration=model.calibration,
        temperature=model.temperature_ if model.calibration == "temperature" else None,
        train_seconds=None,
        artifact=artifact,
        origin="imported",
        metrics={
            "imported_from": str(path),
            "source_project": meta.get("source_project"),
            "source_version": meta.get("version"),
            "source_test_metrics": meta.get("test_metrics"),
        },
    )
    return version
