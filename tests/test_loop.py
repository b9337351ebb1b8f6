"""The loop on a real (small) project: cold start, training, queue reasons, signals, model transfer."""

import csv
import json

import numpy as np
import pytest

from labelloop.core.config import CONFIG_NAME
from labelloop.core.loop.al_round import queued_items, store_features, train_and_queue
from labelloop.core.loop.transfer import export_model, import_model
from labelloop.core.store.imports import import_file
from labelloop.core.store.project import Project, init_project
from labelloop.core.util.errors import LabelloopError
from tests.conftest import ROOT, write_csv

SAMPLE = list(csv.DictReader(open(ROOT / "sample_data" / "sms_spam.csv", encoding="utf-8")))
TRUTH = {r["id"]: r["label"] for r in SAMPLE}


def make_project(tmp_path, name="p", n_pool=900, n_test=300, cfg_edits=()):
    d = init_project(tmp_path / name, ["ham", "spam"])
    text = (d / CONFIG_NAME).read_text()
    for old, new in cfg_edits:
        text = text.replace(old, new)
    (d / CONFIG_NAME).write_text(text)
    pool = [r for r in SAMPLE if r["split"] == "pool"][:n_pool]
    test = [r for r in SAMPLE if r["split"] == "test"][:n_test]
    write_csv(tmp_path / f"{name}_pool.csv", ["id", "text"], [[r["id"], r["text"]] for r in pool])
    write_csv(
        tmp_path / f"{name}_test.csv",
        ["id", "text", "label", "split"],
        [[r["id"], r["text"], r["label"], "test"] for r in test],
    )
    p = Project.open(d)
    import_file(p, tmp_path / f"{name}_pool.csv", id_col="id")
    import_file(p, tmp_path / f"{name}_test.csv", id_col="id", label_col="label", split_col="split")
    return p


def label_queue(p, n=None, actor="oracle"):
    for it in queued_items(p, n):
        p.store.append_event(
            it["item_id"],
            "label",
            actor,
            via="key",
            labels=[TRUTH[it["item_id"]]],
            batch_id=it["batch_id"],
            strategy=it["strategy"],
            audit=it["audit"],
            rank=it["rank"],
        )


def test_features_are_cached_until_items_are_added(tmp_path):
    p = make_project(tmp_path)
    a = store_features(p.store, p.cache_dir)
    b = store_features(p.store, p.cache_dir)
    assert not a.from_cache and b.from_cache
    assert (a.X != b.X).nnz == 0 and list(a.ids) == list(b.ids)
    assert a.X.shape[0] == 1200 and a.featurizer.kind == "tfidf"
    write_csv(tmp_path / "more.csv", ["id", "text"], [["new1", "a brand new message"]])
    import_file(p, tmp_path / "more.csv", id_col="id")
    c = store_features(p.store, p.cache_dir)
    assert not c.from_cache and c.X.shape[0] == 1201


def test_hashing_featurizer_above_threshold(tmp_path):
    p = make_project(tmp_path, n_pool=200, n_test=50)
    f = store_features(p.store, p.cache_dir, hashing_above=100)
    assert f.featurizer.kind == "hashing" and f.X.shape == (250, 2 * 2**18)
    assert np.allclose(np.asarray(f.X.multiply(f.X).sum(1)).ravel(), 1.0, atol=1e-5)


def test_cold_start_keyword_then_training_and_queue_reasons(tmp_path):
    p = make_project(
        tmp_path,
        cfg_edits=[
            ('cold_start = "random"', 'cold_start = "keyword"'),
            ('seed_query = ""', 'seed_query = "free|prize|claim"'),
        ],
    )
    r = train_and_queue(p, seed=1)
    assert r.model_version is None and r.strategy == "cold start: keyword"
    q = queued_items(p)
    assert len(q) == 50
    matched = [it for it in q if "keyword match" in it["strategy"]]
    # the cold-start batch has its random-audit share too: half of the other 45 match the query
    assert sum(it["audit"] for it in q) == 5 and len(matched) == 22
    assert all(it["strategy"] == "random" for it in q if it["audit"])
    assert all(any(w in it["text"].lower() for w in ("free", "prize", "claim")) for it in matched)
    # the others say they were drawn at random, not that they matched (the why line shows this name)
    drawn = [it for it in q if not it["audit"] and it not in matched]
    assert len(drawn) == 23 and all(it["strategy"] == "cold start: keyword (random draw)" for it in drawn)
    label_queue(p)
    r = train_and_queue(p, seed=2)
    assert r.model_version == 1 and r.n_train == 50
    m = r.metrics
    assert m["n_test"] == 300 and 0.8 < m["accuracy"] <= 1.0
    assert 0 <= m["ece"] <= 1 and sum(m["reliability"]["bin_counts"]) == 300
    stored = json.loads(p.store.scalar("SELECT metrics FROM models WHERE version = 1"))
    assert stored["accuracy"] == m["accuracy"] and stored["n_train"] == 50
    q = queued_items(p)
    assert len(q) == 50 and sum(it["audit"] for it in q) == 5
    main = [it for it in q if not it["audit"]]
    assert [it["rank"] for it in main] == list(range(1, 46))
    assert all(it["strategy"] == "margin" and it["percentile"] > 90 for it in main)
    scores = [it["score"] for it in main]
    assert scores == sorted(scores, reverse=True)
    probs = json.loads(main[0]["probs"])
    assert set(probs) == {"ham", "spam"} and abs(sum(probs.values()) - 1) < 1e-4
    assert all(it["strategy"] == "random" for it in q if it["audit"])


def test_fixed_seed_reproduces_the_queue(tmp_path):
    p = make_project(tmp_path)
    train_and_queue(p, seed=5)
    label_queue(p)
    train_and_queue(p, seed=7)
    first = queued_items(p)
    train_and_queue(p, seed=7)
    again = queued_items(p)
    # the strategy's picks repeat in order; the audit items nobody labelled are carried over, not redrawn
    assert [it["item_id"] for it in again if not it["audit"]] == [it["item_id"] for it in first if not it["audit"]]
    assert {it["item_id"] for it in again if it["audit"]} == {it["item_id"] for it in first if it["audit"]}


@pytest.mark.parametrize(
    "strategy", ["least_confidence", "entropy", "bald", "qbc", "cal", "diversity", "power", "random"]
)
def test_every_strategy_queues_a_batch(tmp_path, strategy):
    p = make_project(tmp_path, n_pool=500, n_test=100)
    train_and_queue(p, seed=1)
    label_queue(p)
    r = train_and_queue(p, strategy=strategy, batch_size=20, seed=3)
    q = queued_items(p)
    assert r.batch_size == len(q) == 20
    labelled = {e[0] for e in p.store.rows("SELECT item_id FROM events")}
    assert not labelled & {it["item_id"] for it in q}
    assert {it["strategy"] for it in q if not it["audit"]} == {strategy}


def test_typicality_and_stratified_cold_start(tmp_path):
    p = make_project(
        tmp_path,
        n_pool=400,
        n_test=50,
        cfg_edits=[('cold_start = "random"', 'cold_start = "typicality"'), ("seed_size = 50", "seed_size = 12")],
    )
    r = train_and_queue(p, seed=0)
    assert r.strategy == "cold start: typicality" and len(queued_items(p)) == 12


def test_stopping_signal_after_three_stable_rounds(tmp_path):
    p = make_project(tmp_path, n_pool=400, n_test=100)
    train_and_queue(p, seed=1)
    label_queue(p)
    reports = [train_and_queue(p, seed=2) for _ in range(4)]  # same labels: identical predictions
    assert reports[0].metrics["stop_kappa"] is None
    assert all(r.metrics["stop_kappa"] == 1.0 for r in reports[1:])
    assert not reports[2].signals["stop"] and reports[3].signals["stop"]
    assert any("Stopping signal" in w for w in reports[3].warnings)


def test_one_class_cannot_train(tmp_path):
    p = make_project(tmp_path, n_pool=100, n_test=20)
    train_and_queue(p, seed=0)
    for it in queued_items(p, 5):
        p.store.append_event(it["item_id"], "label", "a", via="key", labels=["ham"])
    r = train_and_queue(p, seed=0)  # still a cold-start batch, with a seed adequacy warning
    assert r.model_version is None
    assert r.adequacy["per_class"] == {"ham": 5, "spam": 0} and not r.adequacy["adequate"]


def test_model_export_import_as_first_scorer(tmp_path):
    src = make_project(tmp_path, "src")
    train_and_queue(src, seed=1)
    label_queue(src)
    train_and_queue(src, seed=2)
    out, v = export_model(src, tmp_path / "m.pkl")
    dst = make_project(tmp_path, "dst", n_pool=300, n_test=50)
    iv = import_model(dst, out)
    r = train_and_queue(dst, seed=0)
    assert r.model_version == iv and r.strategy == "margin"  # ranked by the imported model, no cold start
    q = queued_items(dst)
    assert all(it["probs"] for it in q) and q[0]["model_version"] == iv
    # stratified cold start: the imported model's predicted classes share the first batch equally
    dst.close()
    cfg = (tmp_path / "dst" / CONFIG_NAME).read_text().replace('cold_start = "random"', 'cold_start = "stratified"')
    (tmp_path / "dst" / CONFIG_NAME).write_text(cfg)
    dst = Project.open(tmp_path / "dst")
    r = train_and_queue(dst, batch_size=20, seed=0)
    assert r.strategy == "cold start: stratified"
    predicted = [
        max(json.loads(it["probs"]), key=json.loads(it["probs"]).get) for it in queued_items(dst) if not it["audit"]
    ]  # the 18 stratified picks (2 of the 20 are random audit)
    from labelloop.core.loop.al_round import features_for, load_model

    art = load_model(dst, iv)
    feats = features_for(dst, featurizer=art["featurizer"])
    pool_pred = art["model"].predict_proba(feats.X[feats.splits == "pool"]).argmax(1)
    n_spam = int((np.array(art["model"].classes_)[pool_pred] == "spam").sum())
    assert (
        len(predicted) == 18 and predicted.count("spam") == min(9, n_spam) and n_spam < 40
    )  # the rare class is not drowned out
    other = init_project(tmp_path / "other", ["sports", "news"])
    with Project.open(other) as o, pytest.raises(LabelloopError, match="does not have"):
        import_model(o, out)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(LabelloopError, match="not in labelloop's safe model format.*--trust"):
        import_model(dst, tmp_path / "junk.pkl")
    with pytest.raises(LabelloopError, match="not a labelloop model file"):
        import_model(dst, tmp_path / "junk.pkl", trust=True)


def _multi_label_project(tmp_path):
    rng = np.random.default_rng(0)
    vocab = {
        "sports": ["goal", "match", "team", "score"],
        "politics": ["election", "vote", "minister", "party"],
        "tech": ["software", "computer", "chip", "code"],
    }
    filler = ["today", "news", "people", "said", "week", "city", "report", "new"]

    def make(i):
        labels = sorted(rng.choice(list(vocab), size=rng.integers(1, 3), replace=False).tolist())
        words = [w for lab in labels for w in rng.choice(vocab[lab], 2, replace=False)] + rng.choice(filler, 5).tolist()
        rng.shuffle(words)
        return [f"m{i}", " ".join(words), "|".join(labels)]

    rows = [make(i) for i in range(500)]
    d = init_project(tmp_path / "ml", ["sports", "politics", "tech"], multi_label=True)
    write_csv(tmp_path / "ml_pool.csv", ["id", "text"], [r[:2] for r in rows[:400]])
    write_csv(tmp_path / "ml_test.csv", ["id", "text", "tags", "split"], [r + ["test"] for r in rows[400:]])
    p = Project.open(d)
    import_file(p, tmp_path / "ml_pool.csv", id_col="id")
    import_file(p, tmp_path / "ml_test.csv", id_col="id", label_col="tags", split_col="split")
    return p, {r[0]: r[2].split("|") for r in rows}


def test_multi_label_one_vs_rest(tmp_path):
    from labelloop.core.api.workspace import Workspace
    from labelloop.core.engine.model import MultiLabelModel

    p, truth = _multi_label_project(tmp_path)
    train_and_queue(p, seed=0)
    for it in queued_items(p):
        p.store.append_event(it["item_id"], "label", "oracle", via="key", labels=truth[it["item_id"]])
    r = train_and_queue(p, seed=1)
    assert r.model_version == 1 and r.n_train == 50
    m = r.metrics
    assert m["micro_f1"] > 0.9 and set(m["per_class"]) == {"sports", "politics", "tech"}
    assert 0 <= m["ece"] <= 1 and m["temperature"] > 0
    art = json.loads(p.store.scalar("SELECT metrics FROM models WHERE version = 1"))
    assert art["micro_f1"] == m["micro_f1"]
    from labelloop.core.loop.al_round import load_model

    assert isinstance(load_model(p, 1)["model"], MultiLabelModel)
    q = queued_items(p)
    probs = json.loads(q[0]["probs"])
    assert set(probs) == {"sports", "politics", "tech"}  # each label's own probability
    with pytest.raises(LabelloopError, match="not available for multi-label"):
        train_and_queue(p, strategy="bald", seed=2)
    p.close()
    ws = Workspace(tmp_path / "ml", actor="alice")
    item = ws.current()
    assert item.suggested_labels == sorted(k for k, v in item.probs.items() if v >= 0.5)
    if item.suggested_labels:
        ws.accept(item)
        assert ws.store.rows("SELECT labels FROM events ORDER BY event_id DESC LIMIT 1")[0][0] == item.suggested_labels
    ws.close()


def test_a_random_cold_start_leaves_the_embeddings_to_the_first_retrain(tmp_path):
    """Picking a random (or keyword) first batch needs no embeddings: they are built by the first
    retrain, so a fresh project shows its first item seconds sooner. The first model uses them."""
    p = make_project(tmp_path, n_pool=200, n_test=60)
    assert p.config.features == "auto" and p.config.cold_start == "random"
    r = train_and_queue(p, seed=1)
    assert r.model_version is None and not (p.cache_dir / "embeddings.npy").exists()
    label_queue(p)
    r = train_and_queue(p, seed=2)
    assert r.model_version == 1 and (p.cache_dir / "embeddings.npy").exists()
