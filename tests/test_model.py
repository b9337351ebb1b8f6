"""The classifier on real text: calibration lowers held-out NLL and keeps the argmax; metrics on the test split."""

import csv

import numpy as np
import pytest
import scipy.sparse as sp

from labelloop.core.engine.calibration import nll
from labelloop.core.engine.features import TextFeaturizer
from labelloop.core.engine.model import evaluate, fit_model
from labelloop.core.loop.al_round import batch_similarity
from labelloop.core.util.errors import ModelError
from tests.conftest import ROOT

ROWS = list(csv.DictReader(open(ROOT / "sample_data" / "sms_spam.csv", encoding="utf-8")))


@pytest.fixture(scope="module")
def data():
    pool = [r for r in ROWS if r["split"] == "pool"]
    test = [r for r in ROWS if r["split"] == "test"]
    fz = TextFeaturizer().fit([r["text"] for r in pool])
    rng = np.random.default_rng(0)
    # 100 labels: the small-seed regime where an uncalibrated model is clearly overconfident.
    # (Measured: at 400 labels the cross-fitted temperature over-softens slightly, NLL 0.108 -> 0.113;
    # at 1,500 it helps again. Fold models see 80% of the labels, so their held-out logits are a
    # biased stand-in for the full model's.)
    train = [pool[i] for i in rng.choice(len(pool), 100, replace=False)]
    return (
        fz.transform([r["text"] for r in train]),
        [r["label"] for r in train],
        fz.transform([r["text"] for r in test]),
        [r["label"] for r in test],
    )


@pytest.mark.parametrize("calibration", ["temperature", "platt"])
def test_calibration_lowers_test_nll_and_keeps_argmax(data, calibration):
    X, y, Xt, yt = data
    m = fit_model(X, y, ["ham", "spam"], calibration=calibration, seed=0)
    yi = np.array([m.classes_.index(v) for v in yt])
    raw, cal = m.uncalibrated_proba(Xt), m.predict_proba(Xt)
    assert nll(cal, yi) < nll(raw, yi)
    if calibration == "temperature":
        assert (raw.argmax(1) == cal.argmax(1)).all()
        assert m.temperature_ > 1.0 and m.info["calibration_n"] == 100


def test_evaluate_reports_the_metrics(data):
    X, y, Xt, yt = data
    m = fit_model(X, y, ["ham", "spam"], seed=0)
    ev = evaluate(m, Xt, yt, ["ham", "spam"])
    assert ev["n_test"] == len(yt) and ev["accuracy"] > 0.85
    pred = np.array(m.classes_)[m.predict_proba(Xt).argmax(1)]
    assert ev["accuracy"] == pytest.approx(np.mean(pred == np.array(yt)))
    spam = ev["per_class"]["spam"]
    tp = np.sum((pred == "spam") & (np.array(yt) == "spam"))
    assert spam["recall"] == pytest.approx(tp / np.sum(np.array(yt) == "spam"))
    assert sum(ev["reliability"]["bin_counts"]) == len(yt) and len(ev["reliability"]["bin_counts"]) == 15
    assert 0 <= ev["ece"] <= ev["mce"] <= 1 and ev["brier"] >= 0


def test_class_weight_balanced_raises_minority_recall(data):
    X, y, Xt, yt = data
    plain = evaluate(fit_model(X, y, ["ham", "spam"], seed=0, C=1.0), Xt, yt, ["ham", "spam"])
    balanced = evaluate(
        fit_model(X, y, ["ham", "spam"], seed=0, C=1.0, class_weight="balanced"), Xt, yt, ["ham", "spam"]
    )
    assert balanced["per_class"]["spam"]["recall"] > plain["per_class"]["spam"]["recall"]


def test_one_class_is_a_clear_error(data):
    X, _, _, _ = data
    with pytest.raises(ModelError, match="at least two classes"):
        fit_model(X[:5], ["ham"] * 5, ["ham", "spam"])


def test_batch_similarity_flags_a_concentrated_batch():
    rng = np.random.default_rng(0)
    from sklearn.preprocessing import normalize

    spread = sp.csr_matrix(normalize(rng.random((50, 200)) ** 8))
    same = sp.csr_matrix(normalize(np.tile(rng.random((1, 200)), (50, 1)) + rng.random((50, 200)) * 0.01))
    X = sp.vstack([spread, same]).tocsr()
    assert batch_similarity(X, np.arange(50, 100)) > 0.99
    assert batch_similarity(X, np.arange(50)) < 0.5 * batch_similarity(X, np.arange(50, 100))


def test_never_returns_the_all_zero_model(data, monkeypatch):
    """lbfgs stops at w = 0 when the starting gradient is below tol (seen with balanced margin batches)."""
    import labelloop.core.engine.model as M

    real = M._logreg
    monkeypatch.setattr(M, "_logreg", lambda cw, C, seed, tol=1e-4: real(cw, C, seed, tol=1.0 if tol > 1e-9 else tol))
    X, y, Xt, yt = data
    m = fit_model(X, y, ["ham", "spam"], calibration="none", seed=0)
    assert np.any(m.clf.coef_) and int(np.max(m.clf.n_iter_)) > 0


@pytest.mark.parametrize("k", [2, 3])
def test_approximate_leave_one_out_logits_track_exact_leave_one_out(k):
    """alo_logits against refitting without each item in turn (the thing it approximates)."""
    from labelloop.core.engine.model import CalibratedModel, _fit_lr, alo_logits

    rng = np.random.default_rng(k)
    n, d = 60, 20
    centres = rng.normal(0, 1.2, size=(k, d))
    y = np.arange(n) % k
    X = sp.csr_matrix(centres[y] + rng.normal(0, 1, size=(n, d)))
    C = 1.0
    full = CalibratedModel(list(range(k)), _fit_lr(X, y, None, C, 0), "none")
    alo = alo_logits(full, X, y, C)
    exact = np.empty_like(alo)
    for i in range(n):
        keep = np.arange(n) != i
        m = CalibratedModel(list(range(k)), _fit_lr(X[keep], y[keep], None, C, 0), "none")
        exact[i] = m.decision(X[i])[0]
    z_full = full.decision(X)
    # the true-class logit moves from the full fit towards the leave-one-out value
    t = np.arange(n)
    true_exact, true_alo, true_full = exact[t, y], alo[t, y], z_full[t, y]
    assert np.corrcoef(true_exact - true_full, true_alo - true_full)[0, 1] > 0.9
    assert np.mean(np.abs(true_alo - true_exact)) < 0.35 * np.mean(np.abs(true_full - true_exact))
