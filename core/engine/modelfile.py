"""A model with its featurizer in one safe file (``models/model_vN.npz``, and ``labelloop model export``).

See core/engine/artifacts.py for the format: numbers and JSON, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

from pathlib import Path

from labelloop.core.engine.artifacts import ArtifactError, load_bundle, require, save_bundle
from labelloop.core.engine.features import TextFeaturizer
from labelloop.core.engine.model import model_from_state, model_state


def save_model_file(path: Path | str, model, featurizer: TextFeaturizer, meta: dict | None = None) -> Path:
    m_meta, m_arrays = model_state(model)
    f_meta, f_arrays = featurizer.state()
    return save_bundle(
        path,
        {**(meta or {}), "model": m_meta, "featurizer": f_meta},
        {**{f"model_{k}": v for k, v in m_arrays.items()}, **f_arrays},
    )


def read_model_file(path: Path | str, *, what: str = "model file") -> dict:
    """{"model", "featurizer", "meta"} from a file written by ``save_model_file``; never unpickles."""
    path = Path(path)
    meta, arrays = load_bundle(path, what=what)
    where = str(path)
    require(
        isinstance(meta.get("model"), dict) and isinstance(meta.get("featurizer"), dict),
        where,
        "the model or featurizer section is missing",
    )
    model = model_from_state(
        meta["model"], {k[6:]: v for k, v in arrays.items() if k.startswith("model_")}, where=where
    )
    featurizer = TextFeaturizer.from_state(
        meta["featurizer"], {k: v for k, v in arrays.items() if k.startswith("fz_")}, where=where
    )
    d = _n_weights(model)
    if d is not None and d != featurizer.n_features_:
        raise ArtifactError(
            f"{where}: the model has {d} weights per class but its featurizer makes "
            f"{featurizer.n_features_} features; the file is damaged."
        )
    return {"model": model, "featurizer": featurizer, "meta": meta}


def _n_weights(model) -> int | None:
    if hasattr(model, "clf"):
        return int(model.clf.coef_.shape[1])
    for c in getattr(model, "clfs", []):
        if not isinstance(c, float):
            return int(c.coef_.shape[1])
    return None
