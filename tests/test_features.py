"""Featurizers (TF-IDF, embeddings, both), their offline loading, the cache, and the evidence-based
choice between them (core/engine/features.py, core/engine/embed.py, core/engine/featuresel.py)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import scipy.sparse as sp

from labelloop.core.engine import embed as embed_mod
from labelloop.core.engine.features import FEATURE_MODES, TextFeaturizer, load_or_build_features
from labelloop.core.engine.featuresel import choose_features

TEXTS = [
    "The cat sat on the mat.",
    "A dog barked at the mailman!",
    "Stock prices fell sharply today.",
    "",
    "Ünïcödé text – with dashes",
    "The cat sat on the mat.",
]


@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails, as on a machine without network; requests too."""

    def refuse(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    try:
        import requests

        monkeypatch.setattr(requests, "get", refuse)
        monkeypatch.setattr(requests.Session, "request", refuse)
    except ImportError:
        pass


def test_embeddings_load_offline_and_have_the_documented_shape(no_network, monkeypatch):
    monkeypatch.setattr(embed_mod, "_model", None)  # force a fresh load with the network off
    E = embed_mod.embed_texts(TEXTS)
    assert E.shape == (len(TEXTS), embed_mod.EMBED_DIM) and E.dtype == np.float16
    norms = np.linalg.norm(E.astype(np.float32), axis=1)
    assert np.allclose(norms[[0, 1, 2, 4, 5]], 1.0, atol=2e-3)
    assert np.all(np.isfinite(E))
    # deterministic: the same text gives the same row, in another call and in another batch
    assert np.array_equal(E[0], E[5])
    assert np.array_equal(embed_mod.embed_texts(TEXTS[:3]), E[:3])
    # meaning: the two animal sentences are closer to each other than to the stock market
    sim = E.astype(np.float32) @ E.astype(np.float32).T
    assert sim[0, 1] > sim[0, 2]


@pytest.mark.parametrize("mode", FEATURE_MODES)
def test_each_featurizer_mode_has_its_shape_and_is_deterministic(mode):
    fz = TextFeaturizer("tfidf").fit(TEXTS * 10)
    f = fz.with_mode(mode, 2.0)
    X1, X2 = f.transform(TEXTS), f.transform(TEXTS)
    width = {"tfidf": fz.n_text_features_, "embed": 256, "tfidf+embed": fz.n_text_features_ + 256}[mode]
    assert X1.shape == (len(TEXTS), width) == (len(TEXTS), f.n_features_)
    a = X1.toarray() if sp.issparse(X1) else X1
    b = X2.toarray() if sp.issparse(X2) else X2
    assert np.array_equal(a, b)
    norms = np.linalg.norm(a, axis=1)
    assert np.allclose(norms[[0, 1, 2]], 1.0, atol=2e-3)  # unit rows in every mode (the empty text is zero)
    # the state round-trips without pickle and keeps the mode and weight
    meta, arrays = f.state()
    g = TextFeaturizer.from_state(meta, arrays, where="test")
    assert (g.mode, g.embed_weight, g.n_features_) == (mode, 2.0, f.n_features_)


def test_a_model_file_from_before_embeddings_still_loads_as_tfidf():
    fz = TextFeaturizer("tfidf").fit(TEXTS * 10)
    meta, arrays = fz.state()
    for k in ("mode", "embed_weight", "embed_model"):
        meta.pop(k)
    assert TextFeaturizer.from_state(meta, arrays, where="old").mode == "tfidf"


def test_embeddings_are_cached_once_as_plain_npy_and_reused(tmp_path):
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" for i in range(40)]
    ids = np.array([f"i{i}" for i in range(40)], dtype=object)
    ords = np.arange(40)
    splits = np.array(["pool"] * 40, dtype=object)
    hashes = np.arange(40, dtype=np.uint64)
    calls = []

    def read():
        calls.append(1)
        return ids, ords, splits, texts, hashes

    feats = load_or_build_features((40, 39, "t0"), read, tmp_path, embeddings=True)
    assert feats.E.shape == (40, 256) and len(calls) == 1
    # stored as a plain .npy (no pickle), memory-mapped on reading
    arr = np.load(tmp_path / "embeddings.npy", allow_pickle=False)
    assert arr.dtype == np.float16 and np.array_equal(arr, np.asarray(feats.E))
    again = load_or_build_features((40, 39, "t0"), read, tmp_path, embeddings=True)
    assert len(calls) == 1 and np.array_equal(np.asarray(again.E), arr)
    # the modes read rows of either block; cosine similarity in embedding space
    again.use("tfidf+embed", 1.0)
    assert again.X.shape == (40, again.T.shape[1] + 256)
    assert again.X[np.array([0, 3])].shape == (2, again.T.shape[1] + 256)
    # items added: the embeddings are recomputed for the new fingerprint
    load_or_build_features((40, 39, "t1"), read, tmp_path, embeddings=True)
    assert len(calls) == 2


def _semantic_set(rng, n_per=60):
    """Labels carried by meaning (animals against vehicles) in words that rarely repeat: TF-IDF
    sees mostly new words in every fold, embeddings generalise."""
    animals = [
        "dog",
        "cat",
        "horse",
        "cow",
        "lion",
        "tiger",
        "sheep",
        "goat",
        "wolf",
        "bear",
        "rabbit",
        "deer",
        "fox",
        "monkey",
        "elephant",
        "giraffe",
        "zebra",
        "camel",
        "donkey",
        "pig",
        "squirrel",
        "leopard",
        "kitten",
        "puppy",
        "pony",
        "hamster",
        "otter",
        "moose",
        "buffalo",
        "panther",
    ]
    vehicles = [
        "car",
        "truck",
        "bus",
        "bicycle",
        "train",
        "airplane",
        "motorcycle",
        "scooter",
        "van",
        "tractor",
        "taxi",
        "ambulance",
        "helicopter",
        "boat",
        "ship",
        "tram",
        "jeep",
        "limousine",
        "minivan",
        "lorry",
        "yacht",
        "canoe",
        "sedan",
        "coupe",
        "trolley",
        "submarine",
        "jet",
        "glider",
        "bulldozer",
        "wagon",
    ]
    frames = [
        "I saw a {} yesterday",
        "there was a {} near the house",
        "my neighbour has a {}",
        "a {} appeared in the photo",
        "we talked about the {}",
        "the {} was really big",
    ]
    texts, y = [], []
    for label, words in (("animal", animals), ("vehicle", vehicles)):
        for _ in range(n_per):
            texts.append(rng.choice(frames).format(rng.choice(words)))
            y.append(label)
    return texts, np.array(y, dtype=object)


def _order_set(rng, n_per=60):
    """Labels carried by word order ("north south" against "south north") inside random filler
    words: TF-IDF's word bigrams see it, an average of token vectors cannot (both classes hold the
    same words)."""
    filler = (
        "report meeting weather river garden window music morning letter table coffee street "
        "market teacher summer engine"
    ).split()
    texts, y = [], []
    for label, pair in (("a", "north south"), ("b", "south north")):
        for _ in range(n_per):
            words = list(rng.choice(filler, 10))
            words.insert(int(rng.integers(0, 10)), pair)
            texts.append(" ".join(words))
            y.append(label)
    return texts, np.array(y, dtype=object)


@pytest.mark.parametrize("make,expected", [(_semantic_set, "embed"), (_order_set, "tfidf")])
def test_auto_picks_the_features_that_are_clearly_better(make, expected):
    rng = np.random.default_rng(3)
    texts, y = make(rng)
    fz = TextFeaturizer("tfidf").fit(texts)
    T = fz.transform_text(texts)
    E = embed_mod.embed_texts(texts)
    rows = rng.choice(len(texts), 40, replace=False)
    choice = choose_features(T, E, rows, y[rows], kind="auto", seed=0)
    ev = choice["evidence"]
    assert set(ev) == {"tfidf", "embed", "tfidf+embed x0.5", "tfidf+embed x1", "tfidf+embed x2"}
    assert choice["folds"] == 3 and choice["n"] == 40
    if expected == "embed":
        assert choice["mode"] in ("embed", "tfidf+embed")  # embeddings in the chosen features
        assert ev[choice["name"]][0] >= ev["tfidf"][0] + 0.15
    else:
        assert choice["mode"] == "tfidf"
        assert ev["tfidf"][0] >= ev["embed"][0] + 0.15


def test_choice_without_enough_labels_to_cross_validate_says_so():
    texts = ["a b", "c d", "e f"]
    fz = TextFeaturizer("tfidf").fit(texts)
    choice = choose_features(
        fz.transform_text(texts),
        embed_mod.embed_texts(texts),
        np.arange(3),
        np.array(["x", "y", "z"], dtype=object),
        kind="auto",
    )
    assert choice["folds"] == 0 and "not cross-validated" in choice["reason"]
    assert choice["mode"] in FEATURE_MODES


@pytest.mark.parametrize("mode", ["embed", "tfidf+embed"])
def test_scoring_rows_block_by_block_equal_the_combined_matrix(tmp_path, mode):
    texts = [f"item {i} talks about {'cats' if i % 3 else 'stocks'} and more" for i in range(30)]
    arrays = (
        np.array([f"i{i}" for i in range(30)], dtype=object),
        np.arange(30),
        np.array(["pool"] * 30, dtype=object),
        texts,
        np.arange(30, dtype=np.uint64),
    )
    feats = load_or_build_features((30, 29, "x"), lambda: arrays, tmp_path, embeddings=True).use(mode, 0.5)
    rows = np.array([3, 1, 17, 29])
    W = np.random.default_rng(0).normal(size=(feats.X.shape[1], 4)).astype(np.float32)
    full = feats.X[rows]
    full = full.toarray() if sp.issparse(full) else full
    assert np.allclose(feats.X.lazy(rows) @ W, full @ W, atol=1e-4)
