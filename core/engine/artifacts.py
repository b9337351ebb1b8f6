"""Model and featurizer files in a format that cannot run code.

A labelloop artifact is a NumPy ``.npz`` archive read with ``allow_pickle=False``:
numeric arrays only (weights, intercepts, idf vectors) plus one ``__meta__`` entry,
UTF-8 JSON as bytes, holding everything else (classes, calibration, the featurizer's
settings and vocabulary). Loading one builds plain objects from numbers and strings;
nothing in the file is ever executed. (We chose this over ``skops.io``: the models
are two arrays and a temperature and the featurizer a vocabulary and idf weights, so
a format of our own needs no list of trusted types that would change with
scikit-learn's internals, and no extra dependency.)

The project folder is data, never code: model artifacts, the feature cache and
stop-set predictions are all stored this way. Only ``labelloop model import --trust``
reads a pickle, and only from a file the user names.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from labelloop.core.util.errors import LabelloopError
from labelloop.core.util.safeio import atomic_write

FORMAT = "labelloop-artifact"
FORMAT_VERSION = 1
META_KEY = "__meta__"
MAX_MEMBERS = 64


class ArtifactError(LabelloopError):
    """An artifact file is missing, damaged, or not in labelloop's safe format."""


def save_bundle(path: Path | str, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``meta`` (JSON-able) and numeric ``arrays`` to ``path`` (atomic, never pickled)."""
    payload = {
        META_KEY: np.frombuffer(
            json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **meta}, ensure_ascii=False).encode(
                "utf-8"
            ),
            dtype=np.uint8,
        )
    }
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"artifact array {k!r} has dtype {a.dtype}; only numbers are stored")
        payload[k] = a

    def write(f) -> None:
        buf = io.BytesIO()
        np.savez(buf, **payload)  # numeric arrays only (checked above): nothing to pickle
        f.write(buf.getvalue())

    return atomic_write(path, write)


def load_bundle(path: Path | str, *, what: str = "model file") -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) from an artifact; anything else (a pickle, a damaged or foreign file) is an
    ArtifactError naming the file. Never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: the {what} does not exist.")
    if not zipfile.is_zipfile(path):
        raise ArtifactError(
            f"{path} is not a labelloop {what} (not in the safe .npz format; "
            "a pickle is never loaded from a project folder)."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if META_KEY not in names or len(names) > MAX_MEMBERS:
                raise ArtifactError(f"{path} is not a labelloop {what} (no {META_KEY} entry).")
            arrays = {k: z[k] for k in names}
    except ArtifactError:
        raise
    except Exception as exc:  # object arrays (ValueError), bad zip members, truncation
        raise ArtifactError(
            f"{path} is damaged or not a labelloop {what} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})."
        ) from None
    raw = arrays.pop(META_KEY)
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ArtifactError(f"{path}: its metadata is not valid JSON; the {what} is damaged.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not a labelloop {what}.")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} was written by a newer labelloop (format {meta.get('format_version')}); upgrade labelloop."
        )
    for k, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise ArtifactError(f"{path}: entry {k!r} is not numeric; the {what} is damaged.")
    return meta, arrays


def strings_to_array(items: list[str]) -> np.ndarray:
    """A list of strings as UTF-8 JSON bytes (any string survives, no pickle)."""
    return np.frombuffer(json.dumps(list(items), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def array_to_strings(a: np.ndarray, *, where: str) -> list[str]:
    try:
        out = json.loads(np.asarray(a, dtype=np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ArtifactError(f"{where}: a string list is damaged.") from None
    if not isinstance(out, list) or not all(isinstance(x, str) for x in out):
        raise ArtifactError(f"{where}: a string list is damaged.")
    return out


def require(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ArtifactError(f"{where}: {what}; the file is damaged or was not written by labelloop.")
