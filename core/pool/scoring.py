"""An external pool featurised and scored partition by partition, on a cluster or in this process,
and the batch selected on the driver (issue 18).

Featurise once: each partition's hashed TF-IDF (no vocabulary to gather; the idf from a fixed sample
of the pool, the same rows the in-process featurizer samples) is written into the project's
``pool_features/<featurizer digest>/`` as three ``.npy`` arrays (CSR: data float32, indices int32,
indptr int64; read with ``allow_pickle=False``), then a small ``.json`` marker naming the partition's
stamp: a partition whose marker is there and current is not built again, so a lost worker costs its
own partitions, never the pool. On a cluster of several machines this folder must be on a file
system they share.

Score on the workers, select on the driver: after a retrain the model's arrays (core/engine/model.py
``model_state``; small) go to every worker once; each partition scores its candidates by the
strategy and keeps the scores where they are; the driver merges each partition's top candidates
(their count from the batch size, times the diversity pre-filter) and then asks the partitions
only small questions (how many candidates score below these values, the scores and rows of these
ordinals). The steps, and every draw from the rng, are those of ``select_batch`` in
core/engine/strategies.py over the same candidates in the same order, so the same seed gives the
same batch as the in-process path on the same data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from labelloop.core.engine.features import IDF_SAMPLE, TextFeaturizer
from labelloop.core.engine.model import model_from_state, model_state
from labelloop.core.engine.strategies import (
    Round,
    Selection,
    diversity_among,
    get_strategy,
    n_audit_for,
    place_audit,
    top_k,
)
from labelloop.core.pool.partitions import Partition, PoolError, PoolManifest, partition_changed, read_texts
from labelloop.core.util.errors import EmptyPoolError
from labelloop.core.util.faults import fault_point
from labelloop.core.util.safeio import atomic_write, atomic_write_text

FEATURES_DIR = "pool_features"
SCORE_CHUNK = 50_000
DIVERSITY_BETA = 10  # the diversity pre-filter's candidates per batch slot (strategies.diversity_select)
SUPPORTED = ("margin", "entropy", "least_confidence", "diversity", "random")


# -- featurising ------------------------------------------------------------------------------------
@dataclass
class PartSpec:
    """One partition as a task sees it: the pool's folder and columns, the partition, where its
    features go."""

    manifest: PoolManifest  # holding this one partition
    index: int
    out: str

    @property
    def part(self) -> Partition:
        return self.manifest.partitions[0]

    @property
    def stem(self) -> str:
        return f"part-{self.index:05d}"


def part_specs(manifest: PoolManifest, out: Path) -> list[PartSpec]:
    return [
        PartSpec(
            PoolManifest(manifest.folder, manifest.id_col, manifest.text_col, [p], manifest.meta_cols), i, str(out)
        )
        for i, p in enumerate(manifest.partitions)
    ]


def _sample_texts(spec: PartSpec, rows: np.ndarray) -> list[str]:
    _ids, texts = read_texts(spec.manifest, spec.part)
    return [texts[int(r)] for r in rows]


def fit_pool_featurizer(manifest: PoolManifest, compute, *, hash_bits: int = 18) -> TextFeaturizer:
    """The hashed TF-IDF featurizer of the pool: idf weights from all its texts, or from the sample of
    ``IDF_SAMPLE`` that TextFeaturizer.fit draws (rng seed 0) when the pool is larger."""
    n = manifest.n
    if n > IDF_SAMPLE:
        ords = np.random.default_rng(0).choice(n, IDF_SAMPLE, replace=False)
    else:
        ords = np.arange(n)
    part, local = manifest.locate(np.sort(ords))
    specs = part_specs(manifest, Path("."))
    wanted = [i for i in range(len(specs)) if np.any(part == i)]
    texts_by = compute.run(_sample_texts_task, [(specs[i], local[part == i]) for i in wanted])
    texts = [t for chunk in texts_by for t in chunk]
    return TextFeaturizer("hashing", hash_bits=hash_bits).fit(texts)


def _sample_texts_task(arg) -> list[str]:
    """The sampled rows' texts; none from a partition that cannot be read (featurising names it)."""
    spec, rows = arg
    try:
        return _sample_texts(spec, rows)
    except PoolError:
        return []


_CACHE: dict = {}  # per process: the featurizer and the model, rebuilt from their arrays once


def _cached(kind: str, key: str, make):
    if _CACHE.get(kind, (None,))[0] != key:
        _CACHE[kind] = (key, make())
    return _CACHE[kind][1]


def _marker(spec: PartSpec, digest: str) -> Path:
    return Path(spec.out) / f"{spec.stem}.json"


def _complete(spec: PartSpec, digest: str) -> bool:
    try:
        m = json.loads(_marker(spec, digest).read_text())
    except (OSError, ValueError):
        return False
    p = spec.part
    return m.get("digest") == digest and m.get("stamp") == [p.size, p.mtime_ns] and m.get("rows") == p.rows


def featurise_partition(spec: PartSpec, fz_state: tuple) -> dict:
    """Build one partition's features unless they are there and current: {"index", "rows", "built"}."""
    meta, arrays, digest = fz_state
    if _complete(spec, digest):
        return {"index": spec.index, "rows": spec.part.rows, "built": False}
    fz = _cached("fz", digest, lambda: TextFeaturizer.from_state(meta, arrays, where="the pool's featurizer"))
    _ids, texts = read_texts(spec.manifest, spec.part)
    X = fz.transform_text(texts) if texts else sp.csr_matrix((0, fz.n_text_features_), dtype=np.float32)
    fault_point("pool-featurise")
    out = Path(spec.out)
    for name, arr in (
        ("data", X.data.astype(np.float32)),
        ("indices", X.indices.astype(np.int32)),
        ("indptr", X.indptr.astype(np.int64)),
    ):
        atomic_write(out / f"{spec.stem}.{name}.npy", lambda f, a=arr: np.save(f, a, allow_pickle=False))
    p = spec.part
    marker = {
        "digest": digest,
        "stamp": [p.size, p.mtime_ns],
        "rows": p.rows,
        "cols": int(X.shape[1]),
        "nnz": int(X.nnz),
    }
    atomic_write_text(_marker(spec, digest), json.dumps(marker))
    return {"index": spec.index, "rows": p.rows, "built": True}


def load_partition_features(spec: PartSpec) -> sp.csr_matrix:
    """One partition's features (memory-mapped arrays); PoolError naming the file when missing or damaged."""
    out = Path(spec.out)
    try:
        m = json.loads(_marker(spec, "").read_text())
        arrs = [
            np.load(out / f"{spec.stem}.{n}.npy", mmap_mode="r", allow_pickle=False)
            for n in ("data", "indices", "indptr")
        ]
        X = sp.csr_matrix((arrs[0], arrs[1], arrs[2]), shape=(int(m["rows"]), int(m["cols"])))
    except (OSError, ValueError, KeyError) as e:
        raise PoolError(f"{out / spec.stem}: the features of {spec.part.path} are missing or damaged ({e}).") from None
    return X


@dataclass
class PoolFeatures:
    """The pool's featurizer and where its partitions' features are."""

    featurizer: TextFeaturizer
    specs: list[PartSpec]
    built: int  # partitions built by this call (the others were current)
    skipped: list[str]  # partitions that could not be featurised: one sentence each


def featurise_pool(
    manifest: PoolManifest, project_dir: Path, compute, featurizer: TextFeaturizer | None = None
) -> PoolFeatures:
    """Featurise every partition that is not yet (on the workers). A partition that cannot be read is
    named in ``skipped`` and left out of scoring, never half-scored."""
    fz = featurizer or fit_pool_featurizer(manifest, compute)
    digest = fz.digest()
    out = Path(project_dir) / FEATURES_DIR / digest
    out.mkdir(parents=True, exist_ok=True)
    meta, arrays = fz.state()
    shared = compute.share((meta, arrays, digest))
    specs = part_specs(manifest, out)
    results = compute.run(_featurise_or_error, specs, shared)
    skipped = [r["error"] for r in results if "error" in r]
    ok = {r["index"] for r in results if "error" not in r}
    return PoolFeatures(fz, [s for s in specs if s.index in ok], sum(bool(r.get("built")) for r in results), skipped)


def _featurise_or_error(spec: PartSpec, fz_state: tuple) -> dict:
    try:
        return featurise_partition(spec, fz_state)
    except PoolError as e:
        return {"index": spec.index, "error": str(e)}


# -- scoring ----------------------------------------------------------------------------------------
@dataclass
class ScoreSpec:
    part: PartSpec
    offset: int
    exclude: np.ndarray  # rows of this partition that are not candidates (labelled, queued, test, gold)
    carry: np.ndarray  # candidate rows the strategy may not pick (the carried random-audit items)
    k: int  # how many top candidates the partition returns
    strategy: str


def score_partition(spec: ScoreSpec, model_arrays: tuple) -> dict:
    """The partition's candidates (ordinals) and their scores, kept where they are computed; its top
    ``k`` candidates by the strategy, ties to the lower ordinal."""
    meta, arrays, key = model_arrays
    if partition_changed(spec.part.manifest, spec.part.part):
        raise PoolError(f"{spec.part.manifest.file(spec.part.part)}: changed since the pool was registered.")
    model = _cached("model", key, lambda: model_from_state(meta, arrays, where="the broadcast model"))
    X = load_partition_features(spec.part)
    cand = np.setdiff1d(np.arange(X.shape[0], dtype=np.int64), spec.exclude)
    strat = get_strategy(spec.strategy)
    rnd = Round(model=model)
    scores = np.empty(len(cand))
    for start in range(0, len(cand), SCORE_CHUNK):
        rows = cand[start : start + SCORE_CHUNK]
        Xc = X[rows]
        _p, raw = model.proba_pair(Xc)
        scores[start : start + SCORE_CHUNK] = strat.score(raw, Xc, Xc, rnd)
        fault_point("pool-score")
    pick = scores
    if len(spec.carry):
        pick = scores.copy()
        pick[np.isin(cand, spec.carry)] = -np.inf
    top = top_k(pick, spec.k)
    return {
        "offset": spec.offset,
        "cand": cand,
        "scores": scores,
        "top_ords": spec.offset + cand[top],
        "top_scores": pick[top],
    }


def _top(kept: dict) -> tuple[np.ndarray, np.ndarray]:
    return kept["top_ords"], kept["top_scores"]


def _count_below(kept: dict, values: np.ndarray) -> np.ndarray:
    s = np.sort(kept["scores"])
    return np.searchsorted(s, values, side="left")


def _values_at(kept: dict, ords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(kept["cand"]):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    local = np.asarray(ords, dtype=np.int64) - kept["offset"]
    pos = np.searchsorted(kept["cand"], local)
    ok = (pos < len(kept["cand"])) & (kept["cand"][np.minimum(pos, len(kept["cand"]) - 1)] == local)
    return np.asarray(ords)[ok], kept["scores"][pos[ok]]


def _rows_at(arg) -> sp.csr_matrix:
    spec, local = arg
    return load_partition_features(spec)[np.asarray(local, dtype=np.int64)]


def nth_free(removed: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """The ``ranks``-th (0-based) ordinals not in ``removed`` (sorted, unique): the same as indexing the
    sorted complement, without building it."""
    removed = np.asarray(removed, dtype=np.int64)
    c = removed - np.arange(len(removed), dtype=np.int64)
    ranks = np.asarray(ranks, dtype=np.int64)
    return ranks + np.searchsorted(c, ranks, side="right")


def select_external(
    feats: PoolFeatures,
    manifest: PoolManifest,
    compute,
    model,
    strategy: str,
    batch_size: int,
    *,
    rng: np.random.Generator,
    audit_share: float = 0.0,
    exclude: np.ndarray | None = None,
    carry_audit: np.ndarray | None = None,
) -> Selection:
    """``select_batch`` (core/engine/strategies.py) over an external pool; the Selection's ``index``
    holds the pool's ordinals. ``exclude``: ordinals that are not candidates; ``carry_audit``: the
    previous batch's unlabelled random-audit ordinals, kept first."""
    strat = get_strategy(strategy)
    if strat.name not in SUPPORTED:
        raise PoolError(
            f"strategy '{strat.name}' is not available on an external pool yet; use one of {', '.join(SUPPORTED)}."
        )
    n = manifest.n
    live = {s.index for s in feats.specs}
    unusable = [np.arange(p.offset, p.offset + p.rows) for i, p in enumerate(manifest.partitions) if i not in live]
    removed = np.unique(np.concatenate([np.asarray(exclude if exclude is not None else [], dtype=np.int64), *unusable]))
    n_cand = n - len(removed)
    if n_cand <= 0:
        raise EmptyPoolError("the pool has no unlabelled items left to select.")
    batch_size = min(batch_size, n_cand)
    n_audit = n_audit_for(batch_size, audit_share) if strat.uses_scores else 0
    in_cand = [int(c) for c in dict.fromkeys(int(x) for x in (carry_audit if carry_audit is not None else []))]
    carry = np.array([c for c in in_cand if 0 <= c < n and not _member(removed, c)][:n_audit], dtype=np.int64)
    n_main = batch_size - n_audit
    handles: list = []
    try:
        if not strat.uses_scores:
            main = nth_free(removed, rng.choice(n_cand, size=n_main, replace=False))
            main_scores = pct = np.full(n_main, np.nan)
        else:
            meta, arrays = model_state(model)
            shared = compute.share((meta, arrays, _digest(meta, arrays)))
            k_part = n_main * (DIVERSITY_BETA if strat.name == "diversity" else 1)
            specs = _score_specs(feats, manifest, removed, carry, k_part, strat.name)
            handles = compute.keep(score_partition, specs, shared)
            main = _main_picks(feats, manifest, compute, handles, strat.name, k_part, n_main, rng)
            main_scores = _scores_of(compute, handles, main)
            pct = _percentiles(compute, handles, main_scores, n_cand)
        # assemble_batch: the carried audit items first, the rest drawn from what is left
        carry = carry[~np.isin(carry, main)][:n_audit]
        taken = np.unique(np.concatenate([removed, main, carry]))
        n_rest = n - len(taken)
        n_new = min(max(n_audit - len(carry), 0), n_rest)
        new = nth_free(taken, rng.choice(n_rest, size=n_new, replace=False)) if n_new else np.zeros(0, dtype=np.int64)
        audit = np.concatenate([carry, new]).astype(np.int64)
        if strat.uses_scores and len(audit):
            audit_scores = _scores_of(compute, handles, audit)
            audit_pct = _percentiles(compute, handles, audit_scores, n_cand)
        else:
            audit_scores = audit_pct = np.full(len(audit), np.nan)
    finally:
        compute.forget(handles)
    return place_audit(main, [strat.name] * len(main), main_scores, pct, audit, audit_scores, audit_pct, rng)


def _main_picks(feats, manifest, compute, handles: list, strategy: str, k_part: int, n_main: int, rng) -> np.ndarray:
    """The strategy's picks: the partitions' top candidates merged (by score, ties to the lower
    ordinal: what top_k over the whole pool gives), then for diversity the clusters among them."""
    tops = compute.on(_top, handles)
    ords = np.concatenate([t[0] for t in tops]) if tops else np.zeros(0, np.int64)
    sc = np.concatenate([t[1] for t in tops]) if tops else np.zeros(0)
    order = np.lexsort((ords, -sc))[:k_part]
    cand, cand_scores = ords[order], sc[order]
    if strategy == "diversity" and len(cand) > n_main:
        return diversity_among(_gather_rows(feats, manifest, cand, compute), cand, cand_scores, n_main, rng)
    return np.asarray(cand[:n_main], dtype=np.int64)


def _digest(meta: dict, arrays: dict) -> str:
    import hashlib

    h = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode())
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def _member(sorted_arr: np.ndarray, x: int) -> bool:
    i = np.searchsorted(sorted_arr, x)
    return bool(i < len(sorted_arr) and sorted_arr[i] == x)


def _score_specs(feats: PoolFeatures, manifest: PoolManifest, removed, carry, k: int, strategy: str) -> list[ScoreSpec]:
    out = []
    for spec in feats.specs:
        p = manifest.partitions[spec.index]
        lo, hi = p.offset, p.offset + p.rows
        ex = removed[(removed >= lo) & (removed < hi)] - lo
        ca = carry[(carry >= lo) & (carry < hi)] - lo
        out.append(ScoreSpec(spec, lo, ex, ca, k, strategy))
    return out


def _scores_of(compute, handles: list, ords: np.ndarray) -> np.ndarray:
    got = compute.on(_values_at, handles, np.asarray(ords, dtype=np.int64))
    by = {int(o): float(s) for os_, ss in got for o, s in zip(os_, ss)}
    return np.array([by.get(int(o), np.nan) for o in ords])


def _percentiles(compute, handles: list, values: np.ndarray, n_cand: int) -> np.ndarray:
    """percentile_of over the whole candidate pool: the share (in %) of candidates scoring below each value."""
    counts = compute.on(_count_below, handles, np.asarray(values, dtype=np.float64))
    below = np.sum(counts, axis=0) if counts else np.zeros(len(values))
    return 100.0 * below / max(n_cand, 1)


def _gather_rows(feats: PoolFeatures, manifest: PoolManifest, ords: np.ndarray, compute) -> sp.csr_matrix:
    """The feature rows of ``ords``, in that order, read where the partitions' features are."""
    part, local = manifest.locate(ords)
    by_index = {s.index: s for s in feats.specs}
    groups = [i for i in dict.fromkeys(int(p) for p in part)]
    mats = compute.run(_rows_at, [(by_index[i], local[part == i]) for i in groups])
    stacked = sp.vstack(mats, format="csr")
    # rows came grouped by partition: put them back in the order of ``ords``
    pos = np.concatenate([np.flatnonzero(part == i) for i in groups])
    inverse = np.empty(len(pos), dtype=np.int64)
    inverse[pos] = np.arange(len(pos))
    return stacked[inverse]
