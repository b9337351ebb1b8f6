"""One round of the loop on a project whose pool is external (a folder of Parquet files, issue 18).

The project database keeps what the loop touches: the labelled, test and gold items and the items
queued. The model is trained there as on any project, on features made by the pool's featurizer
(hashed TF-IDF, its idf from a sample of the pool, fitted when the pool is registered), so that it
scores the pool's own features. The batch is chosen over the whole pool, partition by partition, in
this process or on the configured Dask cluster (core/pool/scoring.py); its rows are read from their
files and become items when the batch is committed, in the batch's transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelloop.core.engine.artifacts import load_bundle, save_bundle
from labelloop.core.engine.features import TextFeaturizer
from labelloop.core.pool.partitions import PoolError, PoolManifest, load_manifest
from labelloop.core.store import rounds
from labelloop.core.util.errors import LabelloopError
from labelloop.core.util.textsafe import safe_line

FEATURIZER_FILE = "featurizer.npz"
COLD_STARTS = ("random",)


@dataclass
class ExternalRound:
    """What a round needs of the external pool, read in the main process (picklable)."""

    project_dir: str
    manifest: PoolManifest
    cluster: str
    exclude: np.ndarray  # pool ordinals of the items decided already
    open_audit: np.ndarray  # pool ordinals of the current batch's undecided audit items


def pool_featurizer_path(project_dir: Path) -> Path:
    from labelloop.core.pool.scoring import FEATURES_DIR

    return Path(project_dir) / FEATURES_DIR / FEATURIZER_FILE


def save_pool_featurizer(project_dir: Path, fz: TextFeaturizer, manifest: PoolManifest) -> None:
    meta, arrays = fz.state()
    pool_featurizer_path(project_dir).parent.mkdir(parents=True, exist_ok=True)
    save_bundle(pool_featurizer_path(project_dir), {"featurizer": meta, "folder": manifest.folder}, arrays)


def load_pool_featurizer(project_dir: Path) -> TextFeaturizer:
    path = pool_featurizer_path(project_dir)
    if not path.exists():
        raise PoolError(f"{path} is missing: register the pool again (labelloop import DIR FOLDER --external).")
    meta, arrays = load_bundle(path, what="pool featurizer")
    return TextFeaturizer.from_state(meta["featurizer"], arrays, where=str(path))


def _ords(manifest: PoolManifest, positions: list[tuple[str, int]]) -> np.ndarray:
    offsets = {p.path: (p.offset, p.rows) for p in manifest.partitions}
    out = [offsets[f][0] + r - 1 for f, r in positions if f in offsets and 1 <= r <= offsets[f][1]]
    return np.array(sorted(set(out)), dtype=np.int64)


def plan_external(project) -> ExternalRound | None:
    """The round's view of the external pool, or None when the project's pool is its database."""
    manifest = load_manifest(project.dir)
    if manifest is None:
        return None
    cfg = project.config
    if cfg.multi_label:
        raise LabelloopError("an external pool is not available for multi-label projects yet.")
    if cfg.cold_start not in COLD_STARTS:
        raise LabelloopError(
            f"[strategy] cold_start = {cfg.cold_start!r} is not available with an external pool yet; use random."
        )
    return ExternalRound(
        project_dir=str(project.dir),
        manifest=manifest,
        cluster=cfg.cluster,
        exclude=_ords(manifest, rounds.pool_positions(project.store, "decided")),
        open_audit=_ords(manifest, rounds.pool_positions(project.store, "open_audit")),
    )


_COMPUTE: dict = {}  # the training process keeps its cluster between rounds


def compute_for(setting: str):
    """The executor of ``[compute] cluster``, started once per training process."""
    from labelloop.core.pool.compute import open_compute

    if _COMPUTE.get("setting") != setting:
        close_compute()
        _COMPUTE["compute"] = open_compute(setting)
        _COMPUTE["setting"] = setting
        if not _COMPUTE.get("atexit"):  # a local cluster's processes end with the process that started them
            import atexit

            atexit.register(close_compute)
            _COMPUTE["atexit"] = True
    return _COMPUTE["compute"]


def external_batch(ext: ExternalRound, cfg, model, strategy: str, batch_size: int, rng, report) -> dict:
    """The batch over the external pool: {"selection" (its index: pool ordinals), "ids", "probs" (the
    model's calibrated probabilities of the batch, or None), "new_items" (columns for
    ``rounds.insert_pool_items``), "pool_size", "compute" (what scored it)}."""
    from labelloop.core.pool.scoring import featurise_pool, select_external

    compute = compute_for(ext.cluster)
    fz = load_pool_featurizer(Path(ext.project_dir))
    feats = featurise_pool(ext.manifest, Path(ext.project_dir), compute, featurizer=fz)
    if feats.built:
        report.notes.append(f"external pool: {feats.built} partition(s) featurised")
    for line in feats.skipped:
        report.notes.append("external pool: " + line + "; skipped until it is registered again")
    if model is None:
        strategy, audit_share, name = "random", 0.0, "cold start: random"
    else:
        audit_share, name = cfg.audit_share, None
    sel = select_external(
        feats,
        ext.manifest,
        compute,
        model,
        strategy,
        batch_size,
        rng=rng,
        audit_share=audit_share,
        exclude=ext.exclude,
        carry_audit=ext.open_audit,
    )
    if name is not None:
        sel.strategy = [name] * len(sel)
    rows = read_rows(ext.manifest, sel.index)
    probs = None
    if model is not None:
        probs = np.asarray(model.predict_proba(fz.transform_text(rows["text"])), dtype=np.float64)
    usable = sum(p.rows for i, p in enumerate(ext.manifest.partitions) if i in {s.index for s in feats.specs})
    return {
        "selection": sel,
        "ids": rows["id"],
        "probs": probs,
        "new_items": {**rows, "folder": ext.manifest.folder},
        "pool_size": int(usable - len(ext.exclude)),
        "compute": compute.describe(),
    }


def read_rows(manifest: PoolManifest, ords: np.ndarray) -> dict:
    """Columns id, text, metadata (JSON of the other columns), file and row (1-based) of the pool's
    ``ords``, in that order."""
    import polars as pl

    part, local = manifest.locate(ords)
    found: dict[int, tuple] = {}
    for i in dict.fromkeys(int(p) for p in part):
        p = manifest.partitions[i]
        want = local[part == i]
        try:
            df = (
                pl.scan_parquet(manifest.file(p))
                .with_row_index("_row")
                .filter(pl.col("_row").is_in(want.tolist()))
                .collect()
            )
        except Exception as e:
            raise PoolError(f"{manifest.file(p)}: could not be read ({safe_line(str(e), 120)}).") from None
        meta_cols = [c for c in manifest.meta_cols if c in df.columns]
        for rec in df.iter_rows(named=True):
            meta = {c: rec[c] for c in meta_cols if rec[c] is not None}
            found[p.offset + int(rec["_row"])] = (
                str(rec[manifest.id_col]),
                str(rec[manifest.text_col]),
                json.dumps(meta, ensure_ascii=False, default=str) if meta else None,
                p.path,
                int(rec["_row"]) + 1,
            )
    missing = [int(o) for o in ords if int(o) not in found]
    if missing:
        raise PoolError(f"{len(missing)} chosen row(s) could not be read back from the pool's files.")
    cols = list(zip(*(found[int(o)] for o in ords))) if len(ords) else [[] for _ in range(5)]
    return {k: list(v) for k, v in zip(("id", "text", "metadata", "file", "row"), cols)}


def register_pool(project, folder: str, *, id_col: str = "id", text_col: str = "text", refresh: bool = False) -> dict:
    """Register (or with ``refresh``, bring up to date) the project's external pool: the files checked,
    the featurizer fitted on a sample of the pool (kept for the project's life, so the features of
    the files stay valid) and every partition featurised, on the configured cluster or here."""
    import time

    from labelloop.core.pool import partitions
    from labelloop.core.pool.scoring import featurise_pool, fit_pool_featurizer

    t0 = time.perf_counter()
    old = load_manifest(project.dir)
    if refresh or (old is not None and Path(folder).resolve() == Path(old.folder)):
        if old is None:
            raise PoolError("this project has no external pool yet: labelloop import DIR FOLDER --external")
        r = partitions.refresh(old)
        manifest, lines = r.manifest, r.lines()
        if r.added:
            _check_new_ids(project, manifest, r.added)
    else:
        if old is not None:
            raise PoolError(
                f"the project's pool is already {old.folder}; a project has one external pool "
                "(add files to that folder and run labelloop import DIR --refresh)."
            )
        manifest = partitions.register(Path(folder), id_col, text_col)
        _check_new_ids(project, manifest, [p.path for p in manifest.partitions])
        lines = [f"registered {len(manifest.partitions)} file(s), {manifest.n:,} items, from {manifest.folder}"]
    compute = compute_for(project.config.cluster)
    try:
        fz = load_pool_featurizer(project.dir) if old is not None else fit_pool_featurizer(manifest, compute)
        if old is None:
            save_pool_featurizer(project.dir, fz, manifest)
        partitions.save_manifest(project.dir, manifest)
        feats = featurise_pool(manifest, project.dir, compute, featurizer=fz)
        where = compute.describe()
    finally:
        close_compute()
    return {
        "folder": manifest.folder,
        "files": len(manifest.partitions),
        "items": manifest.n,
        "built": feats.built,
        "skipped": feats.skipped,
        "lines": lines,
        "compute": where,
        "seconds": time.perf_counter() - t0,
    }


def close_compute() -> None:
    old = _COMPUTE.pop("compute", None)
    _COMPUTE.pop("setting", None)
    if old is not None:
        old.close()


def _check_new_ids(project, manifest: PoolManifest, paths: list[str]) -> None:
    """No id of the new files is already an item of the project (imported into it directly)."""
    import polars as pl

    have = rounds.item_ids(project.store)
    if not have:
        return
    known = pl.DataFrame({"id": have}, schema={"id": pl.Utf8}).lazy()
    for path in paths:
        f = Path(manifest.folder) / path
        hit = (
            pl.scan_parquet(f)
            .select(pl.col(manifest.id_col).cast(pl.Utf8).alias("id"))
            .join(known, on="id", how="inner")
            .head(1)
            .collect()
        )
        if hit.height:
            raise PoolError(
                f"{f}: id {safe_line(hit['id'][0], 60)!r} is already an item of the project (imported into it); "
                "ids must be unique across the project and its pool; nothing was registered."
            )
