"""The pool as the loop sees it and the batch a round writes: the candidates, a cold-start batch chosen
without a model or features, the queue rows and the round's warnings.

A fresh project's first batch (random or keyword draws) is chosen here by ``blind_round`` from the
items' ids and text hashes alone, without loading scikit-learn or building features: the first item
is on screen in about a second, and the features are built afterwards in the training process.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from labelloop.core.engine import coldstart
from labelloop.core.engine.itemkeys import ItemKeys
from labelloop.core.engine.strategies import Selection, assemble_batch, get_strategy, n_audit_for
from labelloop.core.pool.partitions import manifest_path
from labelloop.core.store import rounds
from labelloop.core.store.project import Project
from labelloop.core.util.errors import EmptyPoolError, LabelloopError

if TYPE_CHECKING:
    from labelloop.core.engine.features import FeatureSet

STOP_KAPPA = 0.99
STOP_ROUNDS = 3
CONVERGENCE_RATIO = 3.0


@dataclass
class PoolState:
    feats: FeatureSet
    labelled_rows: np.ndarray
    y: list[str]  # first label (single-label projects)
    test_rows: np.ndarray
    y_test: list[str]
    y_lists: list[list[str]] = field(default_factory=list)  # every label (multi-label projects)
    y_test_lists: list[list[str]] = field(default_factory=list)
    candidate_rows: np.ndarray = None  # pool rows that may be queued (undecided; one per distinct text)
    origins: list[str] = field(default_factory=list)  # per labelled row: 'keyword', 'random' or 'other'
    n_duplicates_dropped: int = 0  # undecided pool rows left out because their text is queued or decided


@dataclass
class TrainReport:
    model_version: int | None
    batch_id: int | None
    batch_size: int
    strategy: str
    n_train: int
    metrics: dict = field(default_factory=dict)
    adequacy: dict = field(default_factory=dict)
    signals: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class RoundOutput:
    report: TrainReport
    model: object | None = None  # a newly trained model, to be stored by commit_round
    featurizer: object | None = None
    selection: Selection | None = None
    selected_ids: list = field(default_factory=list)
    selected_probs: np.ndarray | None = None  # (batch, classes) calibrated probabilities, or None
    pool_size: int = 0  # candidates the batch was chosen from
    scorer: object | None = None  # the model whose classes the probabilities follow
    stop_predictions: list | None = None
    arms: dict | None = None  # AL against random-audit labels at equal budget (core/measure/signs.py)
    new_items: dict | None = None  # an external pool's rows the batch brings in (rounds.insert_pool_items)


def state_from(feats: FeatureSet, labelled: list, test: list, taken_ords: list) -> PoolState:
    """The pool as the loop sees it: labelled rows (with where each label came from), the test split,
    and the candidates (undecided pool rows, one per distinct text)."""
    mask = feats.splits == "pool"
    taken_rows = feats.rows_for_ords(taken_ords) if len(taken_ords) else np.zeros(0, dtype=np.int64)
    mask[taken_rows] = False
    candidates = np.flatnonzero(mask)
    dropped = 0
    if feats.text_hash is not None and len(candidates):
        # Identical texts: one representative per text (the first in import order), and none whose
        # text was already decided, so no batch holds two copies and no text is labelled twice.
        h = feats.text_hash[candidates]
        _, first = np.unique(h, return_index=True)
        keep = np.zeros(len(candidates), dtype=bool)
        keep[first] = True
        if len(taken_rows):
            keep &= ~np.isin(h, feats.text_hash[taken_rows])
        dropped = int(len(candidates) - keep.sum())
        candidates = candidates[keep]
    return PoolState(
        feats=feats,
        labelled_rows=feats.rows_for_ords([r[0] for r in labelled]),
        y=[r[1][0] for r in labelled],
        test_rows=feats.rows_for_ords([r[0] for r in test]),
        y_test=[r[1][0] for r in test],
        y_lists=[list(r[1]) for r in labelled],
        y_test_lists=[list(r[1]) for r in test],
        candidate_rows=candidates,
        origins=[origin(r[2], r[3]) for r in labelled],
        n_duplicates_dropped=dropped,
    )


def origin(strategy: str | None, audit: bool | None) -> str:
    """Where a label came from, for the prior correction: a keyword match, a random draw, or other."""
    if strategy and "(keyword match)" in strategy:
        return "keyword"
    # ("cold start: keyword" alone: a random draw of a keyword cold start, as older releases named it)
    if audit or strategy in (
        "cold start: keyword (random draw)",
        "cold start: keyword",
        "cold start: random",
        "random",
    ):
        return "random"
    return "other"


def open_audit_candidates(feats: FeatureSet, state: PoolState, ords: list) -> np.ndarray:
    """The current batch's audit items that nobody has decided yet, as indices into the candidates
    (in their queue order): the next batch keeps them, so a retrain never drops the control arm."""
    if not ords:
        return np.zeros(0, dtype=np.int64)
    try:
        rows = feats.rows_for_ords(ords)
    except LookupError:
        return np.zeros(0, dtype=np.int64)
    idx = np.searchsorted(state.candidate_rows, rows)
    ok = (idx < len(state.candidate_rows)) & (
        state.candidate_rows[np.minimum(idx, len(state.candidate_rows) - 1)] == rows
    )
    return idx[ok].astype(np.int64)


def cold_start_batch(
    cfg, feats: FeatureSet, state: PoolState, k: int, rng, carry: np.ndarray, keyword_ords: list | None
) -> Selection:
    rows = state.candidate_rows
    n = len(rows)
    k = min(k, n)
    n_audit = n_audit_for(k, cfg.audit_share)
    # the method picks k - n_audit items among those that are not carried audit items
    eligible = np.setdiff1d(np.arange(n), carry)
    want = min(k - n_audit, len(eligible))
    method = cfg.cold_start
    flags = None
    if method == "keyword":
        matched_ords = keyword_ords or []
        matched_rows = feats.rows_for_ords(matched_ords) if matched_ords else np.zeros(0, dtype=np.int64)
        pos = np.flatnonzero(np.isin(rows[eligible], matched_rows))
        picked, flags = coldstart.keyword_seed(pos, len(eligible), want, rng)
        # matches and random draws interleaved: whatever prefix is labelled before the first retrain
        # holds both (matches first made the first model learn the matches' class shares)
        order = rng.permutation(len(picked))
        picked, flags = picked[order], flags[order]
    elif method == "typicality":
        picked = coldstart.typicality_seed(feats.neighbour_X[rows[eligible]], want, rng)
    else:  # random; and stratified or model when no model exists yet to stratify or rank with
        picked = coldstart.random_seed(len(eligible), want, rng)
        if method in ("stratified", "model"):
            method = f"random (no model yet for {method})"
    picked = eligible[picked]
    m = len(picked)
    names = [
        f"cold start: {method}" + ("" if flags is None else " (keyword match)" if f else " (random draw)")
        for f in (flags if flags is not None else [False] * m)
    ]
    return assemble_batch(picked, names, np.full(m, np.nan), np.full(m, np.nan), n, n_audit, rng, carry_audit=carry)


def warnings_for(report: TrainReport) -> list[str]:
    out = []
    m = report.metrics or {}
    if isinstance(m.get("ece"), float) and m["ece"] > 0.10:
        out.append(
            f"ECE {m['ece']:.3f} on the test split is above 0.10: uncertainty is poorly calibrated, "
            "so uncertainty sampling may not beat random."
        )
    if not report.adequacy.get("adequate", True):
        short = ", ".join(f"{c} needs {n} more" for c, n in report.adequacy["short"].items())
        out.append(f"Seed set below {report.adequacy['minimum']} labels per class: {short}.")
    sig = report.signals or {}
    if sig.get("stop"):
        out.append(
            f"Stopping signal: predictions on the stop set agreed (kappa >= {STOP_KAPPA}) for "
            f"{STOP_ROUNDS} rounds; more labels are unlikely to change the model much."
        )
    if sig.get("converging"):
        out.append(
            f"Batch convergence: this batch is {sig['convergence_ratio']:.1f}x more self-similar than a random "
            "batch; the strategy is concentrating on one region (consider diversity or more audit)."
        )
    if m.get("n_test", 1) == 0:
        out.append(
            "No held-out test split: accuracy and calibration cannot be measured (import items with split=test)."
        )
    return out


def write_batch(project: Project, out: RoundOutput, model_version: int | None) -> int:
    sel, report = out.selection, out.report
    classes = list(out.scorer.classes_) if out.scorer is not None else None
    rows = []
    for pos, item_id in enumerate(out.selected_ids):
        p = None
        if out.selected_probs is not None and classes is not None:
            p = json.dumps({c: round(float(v), 6) for c, v in zip(classes, out.selected_probs[pos])})
        rows.append(
            [
                pos,
                item_id,
                sel.strategy[pos],
                None if np.isnan(sel.score[pos]) else float(sel.score[pos]),
                int(sel.rank[pos]) if sel.rank[pos] else None,
                None if np.isnan(sel.percentile[pos]) else float(sel.percentile[pos]),
                bool(sel.audit[pos]),
                model_version,
                p,
            ]
        )
    return rounds.insert_batch(
        project.store,
        model_version=model_version,
        strategy=report.strategy,
        size=len(sel),
        n_audit=int(sel.audit.sum()),
        pool_size=out.pool_size,
        signals=report.signals,
        queue_columns=[list(c) for c in zip(*rows)] if rows else [],
        new_items=out.new_items,
    )


def blind_start(cfg, trainable: bool, imported) -> bool:
    """Whether this round's batch is chosen without features: a cold start by random draws or a
    keyword (or by a model or strata that do not exist yet), before any model."""
    return not trainable and imported is None and cfg.cold_start in ("random", "keyword", "stratified", "model")


def trainable(cfg, y_lists: list[list[str]]) -> bool:
    if cfg.multi_label:  # one-vs-rest: trainable once some label is present on some items and absent on others
        return any(0 < sum(c in labs for labs in y_lists) < len(y_lists) for c in cfg.labels)
    return len({labs[0] for labs in y_lists}) >= 2


def signals(sim: float | None, base: float | None, kappas: list) -> dict:
    """The batch's signals: its self-similarity against a random batch's (None when chosen without
    features), and the stop set's agreement over the last rounds (newest first)."""
    kappas = kappas[:STOP_ROUNDS]
    stable = len(kappas) == STOP_ROUNDS and all(k is not None and k >= STOP_KAPPA for k in kappas)
    return {
        "batch_similarity": sim,
        "pool_similarity": base,
        "convergence_ratio": (sim / base) if base else None,
        "converging": bool(base and sim / base >= CONVERGENCE_RATIO),
        "stop_kappas": kappas,
        "stop": stable,
    }


def blind_round(
    project: Project, *, strategy: str | None = None, batch_size: int | None = None, seed: int | None = None, **_kw
) -> TrainReport | None:
    """A round chosen without features (``blind_start``), planned, computed and committed here; None
    when the project's round needs a model or features (the caller runs the full round)."""
    cfg = project.config
    get_strategy(strategy or cfg.strategy, multi_label=cfg.multi_label)  # an unknown name is refused here too
    if batch_size is not None and batch_size < 1:
        raise LabelloopError(f"--batch must be at least 1, got {batch_size}.")
    if manifest_path(project.dir).exists():  # an external pool: its cold start is drawn over the pool's files
        return None
    s = project.store
    labelled = rounds.labelled(s)
    if not blind_start(cfg, trainable(cfg, [lab for _o, lab, _s, _a in labelled]), rounds.latest_imported_version(s)):
        return None
    t0 = time.perf_counter()
    keyword = None
    if cfg.cold_start == "keyword" and not labelled:
        keyword = rounds.keyword_ords(s, coldstart.check_seed_query(cfg.seed_query))
    keys = ItemKeys(*s.item_keys())
    rng = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
    state = state_from(keys, labelled, rounds.test_split(s), rounds.decided_ords(s))
    if len(state.candidate_rows) == 0:
        raise EmptyPoolError("every pool item is labelled, skipped or flagged; import more items to go on.")
    counts = {c: sum(c in labs for labs in state.y_lists) for c in cfg.labels}
    report = TrainReport(
        None,
        None,
        0,
        f"cold start: {cfg.cold_start}",
        len(state.y),
        adequacy=coldstart.seed_adequacy(counts, cfg.labels, cfg.min_labels_per_class),
    )
    if state.n_duplicates_dropped:
        report.notes.append(duplicates_note(state.n_duplicates_dropped))
    carry = open_audit_candidates(keys, state, rounds.open_audit_ords(s))
    k = batch_size if batch_size is not None else cfg.seed_size
    selection = cold_start_batch(cfg, keys, state, k, rng, carry, keyword)
    report.signals = signals(None, None, list(rounds.recent_stop_kappas(s, STOP_ROUNDS)))
    out = RoundOutput(report, selection=selection, pool_size=int(len(state.candidate_rows)))
    out.selected_ids = [str(i) for i in keys.ids[state.candidate_rows[selection.index]]]
    report.seconds = {"score_select": time.perf_counter() - t0}
    report.batch_id = write_batch(project, out, None)
    report.batch_size = len(selection)
    report.warnings = warnings_for(report)
    report.seconds["total"] = time.perf_counter() - t0
    return report


def duplicates_note(n: int) -> str:
    return (
        f"{n:,} undecided pool items repeat the exact text of another "
        "item (queued or decided) and are left out of selection."
    )
