"""Calibration and its measurement: temperature scaling, Platt scaling, ECE and friends.

ECE is top-label with 15 equal-width bins, reported with its bin counts (a
bin with three items says little). Metrics follow the usual definitions:
Guo et al. 2017 (temperature scaling, ECE), Platt 1999 (sigmoid scaling).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

N_BINS = 15


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return softmax(logits / temperature, axis=1)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return float(-np.mean(np.log(p)))


def fit_temperature(logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """The temperature T > 0 that minimises the (weighted) NLL of softmax(logits / T) on (logits, y).

    Dividing logits by one positive number never changes the argmax."""
    if len(y) == 0:
        return 1.0
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)

    def loss(log_t: float) -> float:
        lp = log_softmax(logits / np.exp(log_t), axis=1)
        return -float(np.average(lp[np.arange(len(y)), y], weights=w))

    res = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


class PlattCalibrator:
    """One sigmoid a*s+b per class on its decision score, renormalised across classes (one-vs-rest)."""

    def fit(self, logits: np.ndarray, y: np.ndarray) -> "PlattCalibrator":
        from sklearn.linear_model import LogisticRegression

        k = logits.shape[1]
        self.coef_ = np.ones(k)
        self.intercept_ = np.zeros(k)
        for c in range(k):
            target = (y == c).astype(int)
            if target.min() == target.max():
                continue
            lr = LogisticRegression(C=1e4).fit(logits[:, [c]], target)
            self.coef_[c], self.intercept_[c] = lr.coef_[0, 0], lr.intercept_[0]
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(logits * self.coef_ + self.intercept_)))
        if p.shape[1] == 1:
            return p
        s = p.sum(axis=1, keepdims=True)
        return p / np.where(s > 0, s, 1.0)


def reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Top-label reliability diagram data and the ECE/MCE derived from it."""
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds confidences in (edges[i], edges[i+1]]; a confidence of exactly 0 goes to bin 0
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg_conf = np.where(counts > 0, conf_sum / counts, np.nan)
        accuracy = np.where(counts > 0, acc_sum / counts, np.nan)
    gaps = np.abs(np.nan_to_num(accuracy) - np.nan_to_num(avg_conf))
    n = max(len(y), 1)
    ece = float(np.sum(counts / n * gaps))
    mce = float(np.max(np.where(counts > 0, gaps, 0.0))) if len(y) else 0.0
    return {
        "ece": ece,
        "mce": mce,
        "bin_edges": edges.tolist(),
        "bin_counts": counts.tolist(),
        "bin_confidence": [None if np.isnan(v) else float(v) for v in avg_conf],
        "bin_accuracy": [None if np.isnan(v) else float(v) for v in accuracy],
    }


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    return reliability(probs, y, n_bins)["ece"]


def brier(probs: np.ndarray, y: np.ndarray) -> float:
    onehot = np.zeros_like(probs)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
