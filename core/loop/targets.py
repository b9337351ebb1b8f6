"""Verdicts at several accuracy targets (issue 22): labels to reach 90, 95 and 98% of the full-pool
accuracy per arm, each with its interval over repeats, the paired saving against random with its
interval, one verdict line per target and a summary of where active learning pays.

A repeat that never reaches a target counts at the budget (so a mean is a lower bound when some did
not reach it; the line says how many reached it)."""

from __future__ import annotations

import numpy as np
import polars as pl

TARGETS = (0.90, 0.95, 0.98)
BOOTSTRAP = 2000


def _mean_interval(x: np.ndarray, seed: int) -> tuple[float, float, float]:
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, len(x), size=(BOOTSTRAP, len(x)))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(x.mean()), float(lo), float(hi)


def target_table(curves: pl.DataFrame, full_accuracy: float, budget: int, fracs=TARGETS, seed: int = 0) -> list[dict]:
    """One row per target and arm (features, strategy): labels to target (mean over repeats, 95%
    bootstrap interval, how many reached it) and, against random under the same features, the paired
    saving in labels and in % of random's labels, with intervals."""
    from labelloop.core.loop.simulate import labels_to_target, paired_interval

    rows = []
    for frac in fracs:
        per = labels_to_target(curves, frac * full_accuracy).with_columns(
            pl.col("labels_to_target").fill_null(budget).alias("needed"),
            pl.col("labels_to_target").is_not_null().alias("reached"),
        )
        arms = list(per.select("features", "strategy").unique(maintain_order=True).iter_rows())
        for feat, strat in arms:
            a = per.filter((pl.col("features") == feat) & (pl.col("strategy") == strat)).sort("repeat")
            x = a["needed"].to_numpy().astype(float)
            mean, lo, hi = _mean_interval(x, seed)
            row = {
                "target": frac,
                "features": feat,
                "strategy": strat,
                "labels": mean,
                "low": lo,
                "high": hi,
                "reached": int(a["reached"].sum()),
                "repeats": a.height,
            }
            r = per.filter((pl.col("features") == feat) & (pl.col("strategy") == "random")).sort("repeat")
            if strat != "random" and r.height == a.height and r.height:
                xr = r["needed"].to_numpy().astype(float)
                pi = paired_interval(xr, x, seed=seed)
                base = float(xr.mean()) or 1.0
                row["saving"] = pi["mean"]
                row["saving_low"], row["saving_high"] = pi["low"], pi["high"]
                row["saving_pct"] = 100 * pi["mean"] / base
                row["saving_pct_low"], row["saving_pct_high"] = 100 * pi["low"] / base, 100 * pi["high"] / base
                row["decided"] = pi["decided"]
            rows.append(row)
    return rows


def _pct(frac: float) -> str:
    return f"{frac * 100:g}%"


def verdict_lines(table: list[dict], budget: int) -> list[str]:
    """One line per target: which arm needs fewest labels, and against random how many fewer, with
    the interval (or "as fast as random" when the interval holds zero)."""
    out = []
    for frac in sorted({r["target"] for r in table}):
        rows = [r for r in table if r["target"] == frac]
        cmp = [r for r in rows if "saving" in r]
        reached = ", ".join(f"{r['strategy']} {r['reached']}/{r['repeats']}" for r in rows)
        if not cmp:
            out.append(f"{_pct(frac)}: no random arm to compare with (reached: {reached})")
            continue
        best = max(cmp, key=lambda r: r["saving"])
        if all(r["reached"] == 0 for r in rows):
            out.append(f"{_pct(frac)}: no arm reached it within {budget} labels")
        elif best["decided"] and best["saving"] > 0:
            out.append(
                f"{_pct(frac)}: {best['strategy']} reaches it with {best['saving_pct']:.0f}% fewer labels than random "
                f"[{best['saving_pct_low']:.0f}, {best['saving_pct_high']:.0f}] ({best['labels']:.0f} against "
                f"{best['labels'] + best['saving']:.0f}; reached: {reached})"
            )
        elif all(r["decided"] and r["saving"] < 0 for r in cmp):
            out.append(
                f"{_pct(frac)}: random reaches it fastest; every strategy needs more labels (best "
                f"{best['strategy']}: {-best['saving_pct']:.0f}% more [{-best['saving_pct_high']:.0f}, "
                f"{-best['saving_pct_low']:.0f}]; reached: {reached})"
            )
        else:
            out.append(
                f"{_pct(frac)}: random reaches it as fast (best {best['strategy']}: {best['saving_pct']:+.0f}% labels "
                f"saved [{best['saving_pct_low']:+.0f}, {best['saving_pct_high']:+.0f}], no measurable difference; "
                f"reached: {reached})"
            )
    return out


def pays_summary(table: list[dict]) -> str:
    """Where active learning pays, in one sentence: e.g. "random reaches 95% as fast; margin reaches
    98% with 30% fewer labels [10, 45]"."""
    parts = []
    for frac in sorted({r["target"] for r in table}):
        cmp = [r for r in table if r["target"] == frac and "saving" in r]
        if not cmp:
            continue
        best = max(cmp, key=lambda r: r["saving"])
        if best["decided"] and best["saving"] > 0:
            parts.append(
                f"{best['strategy']} reaches {_pct(frac)} with {best['saving_pct']:.0f}% fewer labels "
                f"[{best['saving_pct_low']:.0f}, {best['saving_pct_high']:.0f}]"
            )
        elif all(r["decided"] and r["saving"] < 0 for r in cmp):
            parts.append(f"random reaches {_pct(frac)} faster than any strategy")
        else:
            parts.append(f"random reaches {_pct(frac)} as fast")
    return "; ".join(parts) if parts else "no comparison with random"
