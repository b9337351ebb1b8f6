import numpy as np
import pytest

from labelloop.core.engine.calibration import (
    PlattCalibrator,
    brier,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability,
    softmax_t,
)


def test_ece_hand_computed():
    # 4 items, binary. Confidences 0.9, 0.9, 0.6, 0.55 -> bins (0.8667,0.9333] and (0.5333,0.6]
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.55, 0.45]])
    y = np.array([0, 1, 1, 1])
    # bin A: conf 0.9, 0.9; correct 1, 0 -> acc 0.5, gap 0.4, weight 2/4
    # bin B: conf 0.6, 0.55; correct 1, 0 -> acc 0.5, avg conf 0.575, gap 0.075, weight 2/4
    assert expected_calibration_error(probs, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.075)
    rel = reliability(probs, y)
    assert sum(rel["bin_counts"]) == 4 and len(rel["bin_counts"]) == 15
    assert rel["mce"] == pytest.approx(0.4)
    assert brier(probs, y) == pytest.approx(np.mean([(0.1**2) * 2, 0.9**2 * 2, 0.4**2 * 2, 0.55**2 * 2]))


def test_perfect_calibration_has_zero_ece():
    probs = np.tile([[0.75, 0.25]], (400, 1))
    y = np.r_[np.zeros(300, int), np.ones(100, int)]
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)


def _overconfident(n, rng):
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), y] += 1.0
    return logits * 4.0, y  # scaled up: far too confident


def test_temperature_scaling_lowers_held_out_nll_and_keeps_argmax():
    rng = np.random.default_rng(0)
    cal_logits, cal_y = _overconfident(2000, rng)
    test_logits, test_y = _overconfident(2000, rng)
    t = fit_temperature(cal_logits, cal_y)
    assert t > 1.5
    before, after = softmax_t(test_logits, 1.0), softmax_t(test_logits, t)
    assert nll(after, test_y) < nll(before, test_y)
    assert expected_calibration_error(after, test_y) < expected_calibration_error(before, test_y)
    assert (after.argmax(1) == before.argmax(1)).all()


def test_platt_scaling_lowers_nll():
    rng = np.random.default_rng(1)
    cal_logits, cal_y = _overconfident(2000, rng)
    test_logits, test_y = _overconfident(2000, rng)
    p = PlattCalibrator().fit(cal_logits, cal_y).transform(test_logits)
    assert np.allclose(p.sum(1), 1)
    assert nll(p, test_y) < nll(softmax_t(test_logits), test_y)
