"""Where the features of a round are built: in the training process, not beside the requests.

A service's retrain used to build a missing feature cache (TF-IDF, embeddings) in its own process:
seconds on 4,000 items, minutes on 400,000, during which the service's process held the CPU and a
SIGTERM waited for it. Now the service only checks that the cache is current; when it is not, it
writes the items to a Parquet snapshot (inside DuckDB, no text through Python) and the training
process builds the cache from it, where stopping the process stops the work.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelloop.core.engine.features import (
    FeatureCacheError,
    FeatureSet,
    current_fingerprint,
    load_or_build_features,
)
from labelloop.core.util.faults import fault_point

SNAPSHOT_PREFIX = ".snapshot-"


@dataclass
class FeatureBuild:
    """What the training process needs to build a feature cache: the snapshot, the items' state it
    holds (the cache key), and the settings."""

    snapshot: str
    items_state: tuple
    cache_dir: str
    hashing_above: int
    featurizer: object | None
    embeddings: bool


def plan_features(
    store, cache_dir: Path, *, hashing_above: int, featurizer=None, embeddings: bool = False, snapshot_dir=None
):
    """(fingerprint, None) when the cache in ``cache_dir`` is current; else (fingerprint, a
    FeatureBuild for the training process, with the items written to a snapshot in ``snapshot_dir``
    (the project's cache folder; ``cache_dir`` when not given))."""
    cache_dir = Path(cache_dir)
    fp, current = current_fingerprint(store.items_state(), cache_dir, featurizer=featurizer, embeddings=embeddings)
    if current is not None:
        return fp, None
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(snapshot_dir) if snapshot_dir is not None else cache_dir
    # (a dot name: what a stopped training process leaves is removed at the next start, safeio.LEFTOVER_PREFIXES)
    path = folder / f"{SNAPSHOT_PREFIX}{uuid.uuid4().hex}.parquet"
    state = store.snapshot_items(path)
    fp, _ = current_fingerprint(state, cache_dir, featurizer=featurizer, embeddings=embeddings)
    build = FeatureBuild(str(path), state, str(cache_dir), hashing_above, featurizer, embeddings)
    return fp, build


def build_features(build: FeatureBuild) -> FeatureSet:
    """Build (or load, when another run built it meanwhile) the feature cache from the snapshot; the
    snapshot is removed once read."""
    import polars as pl

    fault_point("build-features")
    path = Path(build.snapshot)

    def read_items():
        try:
            df = pl.read_parquet(path)
        except Exception as exc:
            raise FeatureCacheError(f"the items snapshot {path} cannot be read ({type(exc).__name__})") from None
        if df.height != build.items_state[0]:
            raise FeatureCacheError("the items changed while their features were prepared; try again")
        return (
            df["id"].to_numpy().astype(object),
            df["ord"].to_numpy().astype(np.int64),
            df["split"].to_numpy().astype(object),
            df["text"].to_list(),
            df["h"].to_numpy().astype(np.uint64),
        )

    try:
        return load_or_build_features(
            build.items_state,
            read_items,
            Path(build.cache_dir),
            hashing_above=build.hashing_above,
            featurizer=build.featurizer,
            embeddings=build.embeddings,
        )
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def prepare_features(build: FeatureBuild) -> str:
    """Run in the training process ahead of a retrain (after a batch chosen without features): build the
    cache and keep the features for the round that follows. Returns their fingerprint."""
    from labelloop.core.loop.al_round import keep_round_features

    feats = build_features(build)
    keep_round_features(build.cache_dir, feats)
    return feats.fingerprint
