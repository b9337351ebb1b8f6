"""Featurizers: TF-IDF over word 1-2-grams and character n-grams, fitted once on the pool.

Character n-grams (within word boundaries) make the features work for Arabic and
other scripts without a tokenizer. Above ``hashing_above`` pool items the
vocabulary is hashed instead (no vocabulary to hold; idf weights still fitted).
The hashed variant keeps fewer character n-grams (4-grams only) so that a pool of a
million items fits in about 1 GB. A project's matrix is cached in its ``cache/`` folder with the item order and is
reused until items are added, so a retrain never re-tokenizes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.preprocessing import normalize

FEATURIZER_VERSION = 2
IDF_SAMPLE = 200_000


class TextFeaturizer:
    """Word 1-2-gram + character 2-5-gram TF-IDF (``kind='tfidf'``) or its hashed variant.

    sklearn-style: ``fit(texts)``, ``transform(texts)``; fitted state has a trailing underscore.
    Rows are L2-normalised, so a dot product between two rows is their cosine similarity.
    """

    def __init__(self, kind: str = "tfidf", *, max_word_features: int = 200_000, max_char_features: int = 300_000,
                 hash_bits: int = 18, min_df: int = 2):
        if kind not in ("tfidf", "hashing"):
            raise ValueError(f"unknown featurizer kind {kind!r}")
        self.kind = kind
        self.max_word_features = max_word_features
        self.max_char_features = max_char_features
        self.hash_bits = hash_bits
        self.min_df = min_df

    def __str__(self) -> str:
        return f"{self.kind}(word 1-2, char 2-5)" if self.kind == "tfidf" else f"hashing(2^{self.hash_bits}, word 1-2, char 4)"

    def _word(self, min_df: int):
        return TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=min_df, sublinear_tf=True,
                               max_features=self.max_word_features, dtype=np.float32, token_pattern=r"(?u)\b\w+\b")

    def _char(self, min_df: int):
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=min_df, sublinear_tf=True,
                               max_features=self.max_char_features, dtype=np.float32)

    def _hashers(self):
        n = 2 ** self.hash_bits
        return (HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=n, alternate_sign=False,
                                  norm=None, dtype=np.float32, token_pattern=r"(?u)\b\w+\b"),
                HashingVectorizer(analyzer="char_wb", ngram_range=(4, 4), n_features=n, alternate_sign=False,
                                  norm=None, dtype=np.float32))

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
            hw, hc = self._hashers()
            self.idf_word_ = TfidfTransformer(sublinear_tf=True).fit(_chunked(hw.transform, texts))
            self.idf_char_ = TfidfTransformer(sublinear_tf=True).fit(_chunked(hc.transform, texts))
        self.n_features_ = self.transform(texts[:1]).shape[1]
        return self

    def transform(self, texts: list[str], chunk: int = 50_000) -> sp.csr_matrix:
        """Chunk by chunk, so the temporary matrices of one chunk are all that exists besides the result."""
        if len(texts) > chunk:
            return sp.vstack([self.transform(texts[i:i + chunk], chunk) for i in range(0, len(texts), chunk)],
                             format="csr")
        if self.kind == "tfidf":
            parts = [self.word_.transform(texts), self.char_.transform(texts)]
        else:
            hw, hc = self._hashers()
            parts = [self.idf_word_.transform(hw.transform(texts)), self.idf_char_.transform(hc.transform(texts))]
        X = sp.hstack(parts, format="csr", dtype=np.float32)
        return normalize(X, copy=False)


def _chunked(fn, texts: list[str], size: int = 50_000) -> sp.csr_matrix:
    if len(texts) <= size:
        return fn(texts)
    return sp.vstack([fn(texts[i:i + size]) for i in range(0, len(texts), size)], format="csr")


@dataclass
class FeatureSet:
    """The project's feature matrix: row i is the item ``ids[i]`` (items in ``ord`` order)."""
    X: sp.csr_matrix
    ids: np.ndarray            # item ids, object array
    ords: np.ndarray           # item ord, sorted ascending: rows_for_ords maps ord -> row
    splits: np.ndarray         # 'pool' | 'test' | 'gold'
    featurizer: TextFeaturizer
    fingerprint: str
    from_cache: bool = False

    def rows_for_ords(self, ords) -> np.ndarray:
        ords = np.asarray(ords, dtype=np.int64)
        rows = np.searchsorted(self.ords, ords)
        if len(ords) and (rows.max() >= len(self.ords) or not np.array_equal(self.ords[rows], ords)):
            raise LookupError("an item is missing from the feature cache; it will be rebuilt")
        return rows


def items_fingerprint(store) -> str:
    n, max_ord, last_import = store.rows(
        "SELECT count(*), coalesce(max(ord), 0), coalesce(max(import_id), 0) FROM items")[0]
    return f"v{FEATURIZER_VERSION}-{n}-{max_ord}-{last_import}"


def load_or_build_features(store, cache_dir: Path, *, hashing_above: int = 500_000,
                           featurizer: TextFeaturizer | None = None) -> FeatureSet:
    """Features for every item, from the cache when no item was added since it was built.

    ``featurizer``: an already fitted featurizer to reuse (an imported model's); otherwise one is
    fitted on the pool texts (unsupervised)."""
    cache_dir = Path(cache_dir)
    fp = items_fingerprint(store)
    if featurizer is not None:
        fp += "-" + _featurizer_digest(featurizer)
    meta_path = cache_dir / "features.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("fingerprint") == fp:
                X = sp.load_npz(cache_dir / "features.npz").tocsr()
                ids = np.load(cache_dir / "feature_ids.npy", allow_pickle=True)
                ords = np.load(cache_dir / "feature_ords.npy")
                splits = np.load(cache_dir / "feature_splits.npy", allow_pickle=True)
                with open(cache_dir / "featurizer.pkl", "rb") as f:
                    fz = pickle.load(f)
                return FeatureSet(X, ids, ords, splits, fz, fp, from_cache=True)
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            pass  # a damaged cache is rebuilt
    rows = store.rows("SELECT id, ord, split, text FROM items ORDER BY ord")
    ids = np.array([r[0] for r in rows], dtype=object)
    ords = np.array([r[1] for r in rows], dtype=np.int64)
    splits = np.array([r[2] for r in rows], dtype=object)
    texts = [r[3] for r in rows]
    del rows
    if featurizer is None:
        pool_texts = [t for t, s in zip(texts, splits) if s == "pool"] or texts
        kind = "hashing" if len(pool_texts) > hashing_above else "tfidf"
        featurizer = TextFeaturizer(kind).fit(pool_texts)
    X = featurizer.transform(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written to temporary names and renamed; the json (fingerprint) last, so a crash leaves a stale
    # or absent fingerprint and the cache is rebuilt, never a mismatched one.
    _atomic(cache_dir / "features.npz", lambda p: sp.save_npz(p, X, compressed=False), ".npz")
    _atomic(cache_dir / "feature_ids.npy", lambda p: np.save(p, ids, allow_pickle=True), ".npy")
    _atomic(cache_dir / "feature_ords.npy", lambda p: np.save(p, ords), ".npy")
    _atomic(cache_dir / "feature_splits.npy", lambda p: np.save(p, splits, allow_pickle=True), ".npy")
    _atomic(cache_dir / "featurizer.pkl", lambda p: p.write_bytes(pickle.dumps(featurizer)), ".pkl")
    _atomic(cache_dir / "features.json", lambda p: p.write_text(json.dumps(
        {"fingerprint": fp, "featurizer": str(featurizer), "shape": list(X.shape)})), ".json")
    return FeatureSet(X, ids, ords, splits, featurizer, fp)


def _featurizer_digest(fz: TextFeaturizer) -> str:
    return hashlib.sha1(pickle.dumps(fz)).hexdigest()[:12]


def _atomic(path: Path, write, suffix: str) -> None:
    tmp = path.with_name(path.stem + ".tmp" + suffix)
    write(tmp)
    os.replace(tmp, path)
