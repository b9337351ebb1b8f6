"""Featurizers: TF-IDF over word 1-2-grams and character n-grams, fitted once on the pool, and
static sentence embeddings (core/engine/embed.py), used alone or beside TF-IDF (``FEATURE_MODES``).

Character n-grams (within word boundaries) make the features work for Arabic and
other scripts without a tokenizer. Above ``hashing_above`` pool items the
vocabulary is hashed instead (no vocabulary to hold; idf weights still fitted).
The hashed variant keeps fewer character n-grams (4-grams only) so that a pool of a
million items fits in about 1 GB. A project's matrix is cached in its ``cache/`` folder with the item order and is
reused until items are added, so a retrain never re-tokenizes. Embeddings are computed once per
item too and cached as float16 ``.npy`` (read with ``allow_pickle=False``, memory-mapped).

Which features a model uses (its *mode*) is chosen per model version from the labels
(core/engine/featuresel.py); the cache holds both blocks and ``FeatureSet.use(mode, weight)`` selects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from labelloop.core.engine.artifacts import (
    ArtifactError,
    array_to_strings,
    load_bundle,
    require,
    save_bundle,
    strings_to_array,
)
from labelloop.core.engine.embed import CHUNK as EMBED_CHUNK
from labelloop.core.engine.embed import EMBED_DIM, EMBED_MODEL, embed_texts
from labelloop.core.engine.itemkeys import rows_for_ords
from labelloop.core.util.errors import LabelloopError
from labelloop.core.util.safeio import atomic_write, atomic_write_text

FEATURIZER_VERSION = 4  # 4: features.json names the items' fingerprint (the embeddings' cache key)
FEATURE_MODES = ("tfidf", "embed", "tfidf+embed")
SPLIT_CODES = ("pool", "test", "gold")
IDF_SAMPLE = 200_000


class TextFeaturizer:
    """Word 1-2-gram + character 2-5-gram TF-IDF (``kind='tfidf'``) or its hashed variant.

    sklearn-style: ``fit(texts)``, ``transform(texts)``; fitted state has a trailing underscore.
    Rows are L2-normalised, so a dot product between two rows is their cosine similarity.
    """

    def __init__(
        self,
        kind: str = "tfidf",
        *,
        max_word_features: int = 200_000,
        max_char_features: int = 300_000,
        hash_bits: int = 18,
        min_df: int = 2,
    ):
        if kind not in ("tfidf", "hashing"):
            raise ValueError(f"unknown featurizer kind {kind!r}")
        self.kind = kind
        self.max_word_features = max_word_features
        self.max_char_features = max_char_features
        self.hash_bits = hash_bits
        self.min_df = min_df
        self.mode = "tfidf"  # which blocks transform() gives: see with_mode
        self.embed_weight = 1.0

    def __str__(self) -> str:
        text = (
            f"{self.kind}(word 1-2, char 2-5)"
            if self.kind == "tfidf"
            else f"hashing(2^{self.hash_bits}, word 1-2, char 4)"
        )
        if self.mode == "embed":
            return EMBED_MODEL
        if self.mode == "tfidf+embed":
            return f"{text} + {EMBED_MODEL} x{self.embed_weight:g}"
        return text

    def with_mode(self, mode: str, weight: float = 1.0) -> "TextFeaturizer":
        """A copy whose ``transform`` gives the features of ``mode`` (the fitted TF-IDF part is shared)."""
        if mode not in FEATURE_MODES:
            raise ValueError(f"unknown features mode {mode!r}")
        import copy

        fz = copy.copy(self)
        fz.mode, fz.embed_weight = mode, float(weight)
        fz.n_features_ = _width(mode, self.n_text_features_)
        return fz

    def _word(self, min_df: int):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            analyzer="word",
            ngram_range=(1, 2),
            min_df=min_df,
            sublinear_tf=True,
            max_features=self.max_word_features,
            dtype=np.float32,
            token_pattern=r"(?u)\b\w+\b",
        )

    def _char(self, min_df: int):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            min_df=min_df,
            sublinear_tf=True,
            max_features=self.max_char_features,
            dtype=np.float32,
        )

    def _hashers(self):
        from sklearn.feature_extraction.text import HashingVectorizer

        n = 2**self.hash_bits
        return (
            HashingVectorizer(
                analyzer="word",
                ngram_range=(1, 2),
                n_features=n,
                alternate_sign=False,
                norm=None,
                dtype=np.float32,
                token_pattern=r"(?u)\b\w+\b",
            ),
            HashingVectorizer(
                analyzer="char_wb", ngram_range=(4, 4), n_features=n, alternate_sign=False, norm=None, dtype=np.float32
            ),
        )

    def fit(self, texts: list[str]) -> "TextFeaturizer":
        min_df = self.min_df if len(texts) >= 50 else 1
        if self.kind == "tfidf":
            self.word_ = self._word(min_df).fit(texts)
            self.char_ = self._char(min_df).fit(texts)
        else:
            # idf weights from a sample: stable well before a million texts, and half the work
            if len(texts) > IDF_SAMPLE:
                rng = np.random.default_rng(0)
                texts = [texts[i] for i in rng.choice(len(texts), IDF_SAMPLE, replace=False)]
            from sklearn.feature_extraction.text import TfidfTransformer

            hw, hc = self._hashers()
            self.idf_word_ = TfidfTransformer(sublinear_tf=True).fit(_chunked(hw.transform, texts))
            self.idf_char_ = TfidfTransformer(sublinear_tf=True).fit(_chunked(hc.transform, texts))
        self.n_text_features_ = self.transform_text(texts[:1]).shape[1]
        self.n_features_ = _width(self.mode, self.n_text_features_)
        return self

    def transform(self, texts: list[str], chunk: int = 50_000):
        """The features of this featurizer's mode for new texts (TF-IDF CSR; embeddings as a dense
        float32 array; both as one CSR matrix, like ``FeatureMatrix``)."""
        if self.mode == "tfidf":
            return self.transform_text(texts, chunk)
        E = embed_texts(list(texts))
        T = self.transform_text(texts, chunk) if self.mode == "tfidf+embed" else None
        return combine(T, E, np.arange(len(texts)), self.mode, self.embed_weight)

    def transform_text(self, texts: list[str], chunk: int = 50_000) -> sp.csr_matrix:
        """TF-IDF, chunk by chunk, so the temporary matrices of one chunk are all that exists besides
        the result."""
        if len(texts) > chunk:
            return sp.vstack(
                [self.transform_text(texts[i : i + chunk], chunk) for i in range(0, len(texts), chunk)], format="csr"
            )
        if self.kind == "tfidf":
            parts = [self.word_.transform(texts), self.char_.transform(texts)]
        else:
            hw, hc = self._hashers()
            parts = [self.idf_word_.transform(hw.transform(texts)), self.idf_char_.transform(hc.transform(texts))]
        from sklearn.preprocessing import normalize

        X = sp.hstack(parts, format="csr", dtype=np.float32)
        return normalize(X, copy=False)

    # -- a state of numbers and strings (stored without pickle; see core/engine/artifacts.py) --------------
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {
            "kind": self.kind,
            "max_word_features": self.max_word_features,
            "max_char_features": self.max_char_features,
            "hash_bits": self.hash_bits,
            "min_df": self.min_df,
            "n_features": int(self.n_features_),
            "mode": self.mode,
            "embed_weight": float(self.embed_weight),
            "embed_model": EMBED_MODEL if self.mode != "tfidf" else None,
        }
        if self.kind == "tfidf":
            arrays = {}
            for name, vec in (("word", self.word_), ("char", self.char_)):
                voc = vec.vocabulary_
                terms = sorted(voc, key=voc.get)
                arrays[f"fz_{name}_terms"] = strings_to_array(terms)
                arrays[f"fz_{name}_idf"] = np.asarray(vec.idf_, dtype=np.float64)
        else:
            arrays = {
                "fz_word_idf": np.asarray(self.idf_word_.idf_, dtype=np.float64),
                "fz_char_idf": np.asarray(self.idf_char_.idf_, dtype=np.float64),
            }
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray], *, where: str) -> "TextFeaturizer":
        kind = meta.get("kind")
        require(kind in ("tfidf", "hashing"), where, f"unknown featurizer kind {kind!r}")
        try:
            fz = cls(
                kind,
                max_word_features=int(meta["max_word_features"]),
                max_char_features=int(meta["max_char_features"]),
                hash_bits=int(meta["hash_bits"]),
                min_df=int(meta["min_df"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{where}: the featurizer settings are incomplete; the file is damaged.") from None
        require(8 <= fz.hash_bits <= 24, where, "hash_bits is out of range")
        if kind == "tfidf":
            for name, make in (("word", fz._word), ("char", fz._char)):
                require(
                    f"fz_{name}_terms" in arrays and f"fz_{name}_idf" in arrays,
                    where,
                    f"the {name} vocabulary is missing",
                )
                terms = array_to_strings(arrays[f"fz_{name}_terms"], where=where)
                idf = np.asarray(arrays[f"fz_{name}_idf"], dtype=np.float64)
                require(
                    idf.ndim == 1 and len(idf) == len(terms) and len(set(terms)) == len(terms),
                    where,
                    f"the {name} vocabulary and its idf weights do not match",
                )
                vec = make(1).set_params(vocabulary={t: i for i, t in enumerate(terms)})
                vec.idf_ = idf
                setattr(fz, f"{name}_", vec)
        else:
            from sklearn.feature_extraction.text import TfidfTransformer

            n = 2**fz.hash_bits
            for name in ("word", "char"):
                idf = np.asarray(arrays.get(f"fz_{name}_idf", np.zeros(0)), dtype=np.float64)
                require(idf.shape == (n,), where, f"the {name} idf weights have the wrong size")
                t = TfidfTransformer(sublinear_tf=True)
                t.idf_ = idf
                setattr(fz, f"idf_{name}_", t)
        fz.n_text_features_ = fz.transform_text(["x"]).shape[1]
        mode = meta.get("mode", "tfidf")  # files written before embeddings existed: TF-IDF
        require(mode in FEATURE_MODES, where, f"unknown features mode {mode!r}")
        if mode != "tfidf":
            require(
                meta.get("embed_model") == EMBED_MODEL,
                where,
                f"the model was trained on embeddings of {meta.get('embed_model')!r}; this install has {EMBED_MODEL}",
            )
        try:
            weight = float(meta.get("embed_weight", 1.0))
        except (TypeError, ValueError):
            weight = float("nan")
        require(np.isfinite(weight) and 0 < weight <= 100, where, "the embedding weight is not a positive number")
        fz.mode, fz.embed_weight = mode, weight
        fz.n_features_ = _width(mode, fz.n_text_features_)
        require(fz.n_features_ == meta.get("n_features"), where, "the featurizer's size does not match")
        return fz

    def digest(self) -> str:
        meta, arrays = self.state()
        h = hashlib.sha1(json.dumps(meta, sort_keys=True).encode())
        for k in sorted(arrays):
            h.update(k.encode())
            h.update(np.ascontiguousarray(arrays[k]).tobytes())
        return h.hexdigest()[:12]


def _chunked(fn, texts: list[str], size: int = 50_000) -> sp.csr_matrix:
    if len(texts) <= size:
        return fn(texts)
    return sp.vstack([fn(texts[i : i + size]) for i in range(0, len(texts), size)], format="csr")


def _width(mode: str, n_text: int) -> int:
    return (n_text if mode != "embed" else 0) + (EMBED_DIM if mode != "tfidf" else 0)


def combine(T, E, rows: np.ndarray, mode: str, weight: float):
    """Rows of the features of ``mode``: TF-IDF rows (CSR), embedding rows (dense float32) or both side
    by side, the embedding block scaled by ``weight`` and each row divided by sqrt(1 + weight^2) so
    that unit rows stay unit rows (cosine similarity is still a dot product)."""
    if mode == "tfidf":
        return T[rows]
    e = np.asarray(E[rows], dtype=np.float32)
    if mode == "embed":
        return e
    scale = 1.0 / np.sqrt(1.0 + weight * weight)
    X = sp.hstack([T[rows], sp.csr_matrix(e * np.float32(weight))], format="csr", dtype=np.float32)
    X.data *= np.float32(scale)
    return X


class CombinedRows:
    """Rows of a ``FeatureMatrix`` for scoring: ``rows @ W`` (W: weights over the combined columns)
    is computed block by block, TF-IDF rows sparse and embedding rows dense, so the combined CSR
    matrix (256 stored values per row) is never built. What ``model.decision`` needs: ``shape`` and
    ``@``."""

    def __init__(self, T_rows, E_rows: np.ndarray, mode: str, weight: float):
        self.T_rows, self.E_rows, self.mode, self.weight = T_rows, E_rows, mode, float(weight)
        n_text = T_rows.shape[1] if (T_rows is not None and mode != "embed") else 0
        self.shape = (E_rows.shape[0], n_text + EMBED_DIM)

    def __matmul__(self, W):
        W = np.asarray(W)
        if self.mode == "embed":
            return self.E_rows @ W
        n_text = self.shape[1] - EMBED_DIM
        scale = np.float32(1.0 / np.sqrt(1.0 + self.weight * self.weight))
        text = self.T_rows @ W[:n_text]
        text = text.toarray() if sp.issparse(text) else np.asarray(text)
        return scale * (text + np.float32(self.weight) * (self.E_rows @ W[n_text:]))


class FeatureMatrix:
    """Row access to the features of one mode (what ``FeatureSet.X`` is when embeddings are used):
    ``M[rows]`` gives those rows (see ``combine``), ``M.shape`` the full size. Nothing of the full
    combined matrix is ever built, so a million-item pool costs its TF-IDF matrix plus 512 MB of
    float16 embeddings."""

    def __init__(self, T, E, mode: str, weight: float):
        self.T, self.E, self.mode, self.weight = T, E, mode, float(weight)
        n = E.shape[0] if E is not None else T.shape[0]
        self.shape = (n, _width(mode, T.shape[1] if T is not None else 0))

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            rows = np.arange(*rows.indices(self.shape[0]))
        return combine(self.T, self.E, np.asarray(rows), self.mode, self.weight)

    def lazy(self, rows) -> CombinedRows:
        """Rows for scoring only (``@`` with weights), without building the combined matrix."""
        rows = np.asarray(rows)
        T_rows = self.T[rows] if (self.T is not None and self.mode != "embed") else None
        return CombinedRows(T_rows, np.asarray(self.E[rows], dtype=np.float32), self.mode, self.weight)


@dataclass
class FeatureSet:
    """The project's features: row i is the item ``ids[i]`` (items in ``ord`` order). ``T`` is the
    TF-IDF matrix, ``E`` the embeddings (None until ``attach_embeddings``), ``X`` the rows of the
    mode in use (``use``)."""

    T: sp.csr_matrix
    ids: np.ndarray  # item ids, object array
    ords: np.ndarray  # item ord, sorted ascending: rows_for_ords maps ord -> row
    splits: np.ndarray  # 'pool' | 'test' | 'gold'
    featurizer: TextFeaturizer
    fingerprint: str
    from_cache: bool = False
    text_hash: np.ndarray | None = None  # 64-bit hash of each item's exact text (duplicates share one)
    note: str | None = None  # e.g. why the cache was rebuilt
    items_fp: str | None = None  # the items' fingerprint (the embeddings cache key)
    E: np.ndarray | None = None  # (n, 256) float16 embeddings, memory-mapped from the cache
    mode: str = "tfidf"
    embed_weight: float = 1.0

    @property
    def X(self):
        if self.mode == "tfidf":
            return self.T
        return FeatureMatrix(self.T, self.E, self.mode, self.embed_weight)

    def use(self, mode: str, weight: float = 1.0) -> "FeatureSet":
        """Select the features rows are read from (this FeatureSet, changed in place, is returned)."""
        if mode not in FEATURE_MODES:
            raise ValueError(f"unknown features mode {mode!r}")
        if mode != "tfidf" and self.E is None:
            raise RuntimeError("embeddings are not loaded; call attach_embeddings first")
        self.mode, self.embed_weight = mode, float(weight)
        return self

    @property
    def neighbour_X(self):
        """Rows for similarity between items (nearest neighbours, clusters, typicality): the
        embeddings when they are loaded (meaningful across wording), else the TF-IDF rows."""
        if self.E is not None:
            return FeatureMatrix(None, self.E, "embed", 1.0)
        return self.T

    @property
    def featurizer_in_use(self) -> "TextFeaturizer":
        """The fitted featurizer, set to the mode in use (what a model file stores)."""
        return self.featurizer.with_mode(self.mode, self.embed_weight)

    def rows_for_ords(self, ords) -> np.ndarray:
        return rows_for_ords(self.ords, ords)


def items_fingerprint(items_state: tuple) -> str:
    """The cache key of the features: item count, highest ord and latest import (``Store.items_state``)."""
    n, max_ord, last_import = items_state
    return f"v{FEATURIZER_VERSION}-{n}-{max_ord}-{last_import}"


class FeatureCacheError(LabelloopError):
    """The feature cache could not be read (stale, damaged or planted); it must be rebuilt."""


def load_cached_features(cache_dir: Path, fingerprint: str) -> FeatureSet:
    """The cached features, only if the cache is exactly ``fingerprint`` (no store needed: a worker
    process uses this). Anything else raises FeatureCacheError."""
    cache_dir = Path(cache_dir)
    try:
        meta = json.loads((cache_dir / "features.json").read_text(encoding="utf-8"))
        if meta.get("fingerprint") != fingerprint:
            raise FeatureCacheError(f"the feature cache in {cache_dir} is not the one expected")
        return _load_cache(cache_dir, fingerprint)
    except FeatureCacheError:
        raise
    except Exception as exc:
        raise FeatureCacheError(f"the feature cache in {cache_dir} cannot be read ({type(exc).__name__})") from None


def invalidate_feature_cache(cache_dir: Path) -> None:
    """Make the next load rebuild the cache (its fingerprint file goes; the rest is overwritten)."""
    try:
        (Path(cache_dir) / "features.json").unlink()
    except FileNotFoundError:
        pass


def load_or_build_features(
    items_state: tuple,
    read_items,
    cache_dir: Path,
    *,
    hashing_above: int = 500_000,
    featurizer: TextFeaturizer | None = None,
    check_only: bool = False,
    embeddings: bool = False,
) -> FeatureSet | str:
    """Features for every item, from the cache when no item was added since it was built.

    ``items_state``: (count, highest ord, latest import) of the items; ``read_items()``: their arrays
    (ids, ords, splits, texts, text hashes) in ord order, called only when the cache must be built.
    Features know arrays, not the store (``Store.items_state`` and ``Store.item_arrays`` give both).

    ``featurizer``: an already fitted featurizer to reuse (an imported model's); otherwise one is
    fitted on the pool texts (unsupervised). Nothing in the cache is unpickled: a damaged or
    foreign cache file is rebuilt, and the FeatureSet's ``note`` says so. ``check_only``: when the
    cache is current, return its fingerprint without loading it. ``embeddings``: make sure the
    embeddings are cached too (and attached), computing them once when they are not."""
    cache_dir = Path(cache_dir)
    fp = items_fp = items_fingerprint(items_state)
    if featurizer is not None:
        fp += "-" + featurizer.digest()
    meta_path = cache_dir / "features.json"
    note = None
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("fingerprint") == fp:
                if check_only:  # the caller (a worker process) loads it itself: just say which
                    if embeddings or (featurizer is not None and featurizer.mode != "tfidf"):
                        ensure_embeddings(cache_dir, meta.get("items"), items_state[0], lambda: read_items()[3])
                    return fp
                feats = _load_cache(cache_dir, fp)
                if embeddings or feats.featurizer.mode != "tfidf":
                    attach_embeddings(feats, cache_dir, lambda: read_items()[3])
                if feats.featurizer.mode != "tfidf":
                    feats.use(feats.featurizer.mode, feats.featurizer.embed_weight)
                return feats
        except Exception as exc:  # truncated, damaged or planted files: rebuild, never trust
            note = f"the feature cache in {cache_dir} was damaged ({type(exc).__name__}) and has been rebuilt"
    ids, ords, splits, texts, text_hash = read_items()
    if featurizer is None:
        pool_texts = [t for t, s in zip(texts, splits) if s == "pool"] or texts
        kind = "hashing" if len(pool_texts) > hashing_above else "tfidf"
        featurizer = TextFeaturizer(kind).fit(pool_texts)
    X = featurizer.transform_text(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Each file is written to a fresh temporary file and renamed; the json (fingerprint) last, so a
    # crash leaves a stale or absent fingerprint and the cache is rebuilt, never a mismatched one.
    split_codes = np.array([SPLIT_CODES.index(x) for x in splits], dtype=np.int8)
    atomic_write(cache_dir / "features.npz", lambda f: sp.save_npz(f, X, compressed=False))
    atomic_write_text(cache_dir / "feature_ids.json", json.dumps(ids.tolist(), ensure_ascii=False))
    atomic_write(cache_dir / "feature_ords.npy", lambda f: np.save(f, ords, allow_pickle=False))
    atomic_write(cache_dir / "feature_splits.npy", lambda f: np.save(f, split_codes, allow_pickle=False))
    atomic_write(cache_dir / "feature_text_hash.npy", lambda f: np.save(f, text_hash, allow_pickle=False))
    fz_meta, fz_arrays = featurizer.state()
    save_bundle(cache_dir / "featurizer.npz", {"featurizer": fz_meta}, fz_arrays)
    atomic_write_text(
        cache_dir / "features.json",
        json.dumps({"fingerprint": fp, "items": items_fp, "featurizer": str(featurizer), "shape": list(X.shape)}),
    )
    feats = FeatureSet(X, ids, ords, splits, featurizer, fp, text_hash=text_hash, note=note, items_fp=items_fp)
    if embeddings or featurizer.mode != "tfidf":
        attach_embeddings(feats, cache_dir, lambda: texts)
    if featurizer.mode != "tfidf":
        feats.use(featurizer.mode, featurizer.embed_weight)
    return feats


def current_fingerprint(
    items_state: tuple, cache_dir: Path, *, featurizer: TextFeaturizer | None = None, embeddings: bool = False
) -> tuple[str, str | None]:
    """(the fingerprint the features of these items have, that fingerprint again if the cache in
    ``cache_dir`` holds them, with the embeddings when asked, else None). Nothing is built or loaded:
    the caller decides where the building happens (the training process, for a service)."""
    cache_dir = Path(cache_dir)
    fp = items_fp = items_fingerprint(items_state)
    if featurizer is not None:
        fp += "-" + featurizer.digest()
    try:
        meta = json.loads((cache_dir / "features.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return fp, None
    if not isinstance(meta, dict) or meta.get("fingerprint") != fp:
        return fp, None
    if (embeddings or (featurizer is not None and featurizer.mode != "tfidf")) and not _embeddings_current(
        cache_dir, items_fp, items_state[0]
    ):
        return fp, None
    return fp, fp


def _load_cache(cache_dir: Path, fp: str) -> FeatureSet:
    where = str(cache_dir)
    X = sp.load_npz(cache_dir / "features.npz").tocsr()  # scipy reads it with allow_pickle=False
    items_fp = json.loads((cache_dir / "features.json").read_text(encoding="utf-8")).get("items")
    ids = json.loads((cache_dir / "feature_ids.json").read_text(encoding="utf-8"))
    ords = np.load(cache_dir / "feature_ords.npy", allow_pickle=False)
    codes = np.load(cache_dir / "feature_splits.npy", allow_pickle=False)
    text_hash = np.load(cache_dir / "feature_text_hash.npy", allow_pickle=False)
    meta, arrays = load_bundle(cache_dir / "featurizer.npz", what="featurizer")
    fz = TextFeaturizer.from_state(meta.get("featurizer") or {}, arrays, where=where)
    n = X.shape[0]
    require(
        isinstance(ids, list) and len(ids) == n and all(isinstance(i, str) for i in ids), where, "item ids do not match"
    )
    require(ords.shape == (n,) and codes.shape == (n,) and text_hash.shape == (n,), where, "cache arrays do not match")
    require(
        ords.dtype.kind == "i" and codes.dtype.kind == "i" and text_hash.dtype == np.uint64, where, "wrong array types"
    )
    require(bool(np.all((codes >= 0) & (codes < len(SPLIT_CODES)))), where, "unknown split codes")
    require(X.shape[1] == fz.n_features_, where, "the matrix does not match the featurizer")
    splits = np.array(SPLIT_CODES, dtype=object)[codes]
    feats = FeatureSet(
        X,
        np.array(ids, dtype=object),
        ords,
        splits,
        fz,
        fp,
        from_cache=True,
        text_hash=text_hash,
        items_fp=items_fp if isinstance(items_fp, str) else None,
    )
    _attach_cached_embeddings(feats, cache_dir)
    return feats


# -- embeddings: computed once per item, cached as float16 .npy beside the TF-IDF matrix ---------------


def _embeddings_current(cache_dir: Path, items_fp: str | None, n: int) -> bool:
    try:
        meta = json.loads((cache_dir / "embeddings.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        items_fp is not None
        and meta.get("items") == items_fp
        and meta.get("model") == EMBED_MODEL
        and meta.get("shape") == [n, EMBED_DIM]
        and _npy_complete(cache_dir / "embeddings.npy", (n, EMBED_DIM), np.dtype("<f2"))
    )


def _npy_complete(path: Path, shape: tuple, dtype: np.dtype) -> bool:
    """Whether ``path`` is a whole .npy of ``shape`` and ``dtype``: its header says so and the file is as
    long as the header promises (a truncated or padded file is not, and is rebuilt)."""
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            got_shape, _fortran, got_dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return False
    return (
        tuple(got_shape) == tuple(shape)
        and got_dtype == dtype
        and size == offset + int(np.prod(shape)) * dtype.itemsize
    )


def _attach_cached_embeddings(feats: FeatureSet, cache_dir: Path) -> bool:
    """Attach the cached embeddings when they are current (memory-mapped, nothing unpickled)."""
    n = feats.T.shape[0]
    if not _embeddings_current(cache_dir, feats.items_fp, n):
        return False
    try:
        E = np.load(cache_dir / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return False
    if E.shape != (n, EMBED_DIM) or E.dtype != np.float16:
        return False
    feats.E = E
    return True


def attach_embeddings(feats: FeatureSet, cache_dir: Path, read_texts, progress=None) -> FeatureSet:
    """Give ``feats`` its embeddings: from the cache when current, else computed (once, for every
    item, in ord order) and cached. ``read_texts()`` is called only when they must be computed."""
    cache_dir = Path(cache_dir)
    if feats.E is not None or _attach_cached_embeddings(feats, cache_dir):
        return feats
    ensure_embeddings(cache_dir, feats.items_fp, feats.T.shape[0], read_texts, progress)
    if not _attach_cached_embeddings(feats, cache_dir):
        raise FeatureCacheError(f"the embeddings cache in {cache_dir} could not be read back")
    return feats


def ensure_embeddings(cache_dir: Path, items_fp: str | None, n: int, read_texts, progress=None) -> None:
    """Compute and cache the embeddings of the ``n`` items unless the cache is current. Written to a
    temporary file and renamed, the json (the key) last: a crash leaves a cache that is rebuilt."""
    cache_dir = Path(cache_dir)
    if items_fp is None:
        raise FeatureCacheError(f"the feature cache in {cache_dir} has no item fingerprint; it will be rebuilt")
    if _embeddings_current(cache_dir, items_fp, n):
        return
    texts = read_texts()
    if len(texts) != n:
        raise FeatureCacheError("the items changed while their embeddings were computed; try again")
    cache_dir.mkdir(parents=True, exist_ok=True)

    def write(f):  # the .npy header, then the rows chunk by chunk: one chunk in memory at a time
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")), "fortran_order": False, "shape": (n, EMBED_DIM)}
        )
        for start in range(0, n, EMBED_CHUNK):
            part = embed_texts(texts[start : start + EMBED_CHUNK])
            f.write(np.ascontiguousarray(part, dtype="<f2").tobytes())
            if progress:
                progress(min(1.0, (start + EMBED_CHUNK) / n))

    atomic_write(cache_dir / "embeddings.npy", write)
    atomic_write_text(
        cache_dir / "embeddings.json", json.dumps({"items": items_fp, "model": EMBED_MODEL, "shape": [n, EMBED_DIM]})
    )
