"""The Workspace: the one API the workstation (and scripts) use.

It wraps a project for one annotator (the OS login): the current queue item,
decisions (label, accept, reject with a reason, skip, flag), undo, retrain and
metrics. Every decision is one committed event row before the call returns.
The queue of the current batch is held in memory so that moving to the next
item costs no query; it is re-read when a retrain brings a new batch.

This is the embedded (in-process) transport; team mode will put the same
methods behind ``labelloop serve``.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from labelloop.core.errors import LabelloopError, StoreError
from labelloop.core.project import Project, current_actor
from labelloop.core.store import Store, store_error_text

UNSPECIFIED = "unspecified"   # the reason of a correction made with a label key, when none is asked for
_STORE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT}


def as_store_error(exc: BaseException) -> StoreError | None:
    """A StoreError for failures of the project store or its disk (DuckDB errors, a full disk, an I/O
    error); None for anything else."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, duckdb.Error) or (isinstance(exc, OSError) and exc.errno in _STORE_ERRNOS):
        return StoreError(f"the project store failed ({store_error_text(exc)}); every decision before it is saved.")
    return None


def _retrain_in_process(executor, project: Project, progress, kw: dict):
    """plan (here) -> compute (in the executor's process) -> commit (here). A feature cache the worker
    cannot read is rebuilt here once and the round retried."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from labelloop.core.features import FeatureCacheError, invalidate_feature_cache
    from labelloop.core.loop import commit_round, compute_round, plan_round
    step = progress or (lambda f, m: None)
    for attempt in range(2):
        step(0.05, "reading the store")
        inp = plan_round(project, keep_features=False, **kw)
        inp.feats = None  # the worker reads the cache itself; never ship the matrix through a pipe
        future = executor.submit(compute_round, inp)
        step(0.2, "training in a separate process")
        try:
            while True:
                try:
                    out = future.result(timeout=0.1)
                    break
                except FutureTimeout:
                    try:
                        step(0.5, "training in a separate process")
                    except BaseException:
                        future.cancel()
                        raise
        except FeatureCacheError:
            if attempt:
                raise
            invalidate_feature_cache(Path(inp.cache_dir))
            continue
        step(0.9, "queueing")
        report = commit_round(project, inp, out)
        step(1.0, "done")
        return report


def _store_guarded(method):
    """Decisions fail as one StoreError when the store does; after the first, the workspace refuses
    every further decision without touching the store (the workstation then closes)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.store_failure is not None:
            raise self.store_failure
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            err = as_store_error(exc)
            if err is None:
                raise
            self.store_failure = err
            raise err from exc
    return wrapper


@dataclass
class QueueItem:
    item_id: str
    text: str
    metadata: dict
    batch_id: int | None
    position: int | None
    strategy: str | None
    score: float | None
    rank: int | None
    percentile: float | None
    audit: bool
    model_version: int | None
    probs: dict[str, float] = field(default_factory=dict)
    suggestion_hidden: bool = False
    multi_label: bool = False

    @property
    def suggested_labels(self) -> list[str]:
        """Single-label: the most probable label. Multi-label: every label at 0.5 or above."""
        if not self.probs:
            return []
        if self.multi_label:
            return sorted(k for k, p in self.probs.items() if p >= 0.5)
        return [max(self.probs, key=self.probs.get)]

    @property
    def suggestion(self) -> str | None:
        return "|".join(self.suggested_labels) or None

    @property
    def why(self) -> str:
        """Why this item was chosen, in words."""
        if self.audit:
            return "random audit (control arm: picked at random to check AL against random sampling)"
        if not self.strategy:
            return "re-shown after undo"
        parts = [self.strategy]
        if self.rank is not None:
            parts.append(f"rank {self.rank}")
        if self.percentile is not None:
            parts.append(f"more uncertain than {self.percentile:.1f}% of the pool")
        return ", ".join(parts)


@dataclass
class Progress:
    done_session: int
    left_in_queue: int
    per_hour: float | None
    total_labelled: int


class Workspace:
    """One annotator's session on a project (embedded transport)."""

    def __init__(self, project_dir: Path | str, *, actor: str | None = None):
        self.project = Project.open(project_dir)
        self.config = self.project.config
        self.store = self.project.store
        self.actor = actor or current_actor()
        self.session_id = uuid.uuid4().hex[:12]
        self.session_started = time.time()
        self.decisions_session = 0
        self.decisions_since_train = 0
        self._queue: list[QueueItem] = []
        self._front: list[QueueItem] = []      # items re-shown after an undo come first
        self._decided_ids: set[str] = set()    # decided in this session (until undone)
        self._lock = threading.RLock()
        self.store_failure: StoreError | None = None
        self.reload_queue()

    def close(self) -> None:
        self.project.close()

    # -- queue ---------------------------------------------------------------
    def reload_queue(self) -> None:
        """Re-read the current batch (after a retrain) minus what is decided."""
        self.set_queue(self.load_queue())

    def load_queue(self, store: Store | None = None) -> list[QueueItem]:
        """The current batch's undecided items (the store's ``open_queue``); ``store`` lets a worker
        thread read with its own cursor."""
        return [self._make_item(r) for r in (store or self.store).open_queue()]

    def set_queue(self, items: list[QueueItem]) -> int:
        """Replace the queue (a retrain brought a new batch). The item the annotator has in front of
        them stays there, as it was shown, until they decide it: a key pressed as the batch changes
        always decides the item that was read. Returns how many of the upcoming items changed."""
        with self._lock:
            shown = self.current()
            before = [i.item_id for i in self._queue]
            # a worker may have read the batch before the latest decisions were made
            fresh = [i for i in items if i.item_id not in self._decided_ids]
            if shown is not None and not self._front and self._queue and shown is self._queue[0]:
                fresh = [shown] + [i for i in fresh if i.item_id != shown.item_id]
            self._queue = fresh
            after = [i.item_id for i in self._queue]
            return len(set(after) - set(before))

    def _make_item(self, r: dict) -> QueueItem:
        meta = json.loads(r["metadata"]) if r.get("metadata") else {}
        probs = json.loads(r["probs"]) if r.get("probs") else {}
        item = QueueItem(r["item_id"], r["text"], meta if isinstance(meta, dict) else {"value": meta},
                         r.get("batch_id"), r.get("position"), r.get("strategy"), r.get("score"), r.get("rank"),
                         r.get("percentile"), bool(r.get("audit")), r.get("model_version"), probs)
        item.multi_label = self.config.multi_label
        item.suggestion_hidden = bool(probs) and self._is_blind(item.item_id)
        return item

    def _is_blind(self, item_id: str) -> bool:
        """A stable share of items (per annotator) is shown without the suggestion, to measure anchoring."""
        share = self.config.blind_share
        if share <= 0:
            return False
        h = hashlib.sha1(f"{self.actor}\0{item_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2 ** 64 < share

    def current(self) -> QueueItem | None:
        with self._lock:
            if self._front:
                return self._front[0]
            return self._queue[0] if self._queue else None

    def queue_length(self) -> int:
        with self._lock:
            return len(self._front) + len(self._queue)

    def _advance(self, item_id: str) -> None:
        with self._lock:
            self._front = [i for i in self._front if i.item_id != item_id]
            self._queue = [i for i in self._queue if i.item_id != item_id]

    # -- decisions -------------------------------------------------------------
    def _append(self, item: QueueItem, kind: str, **fields) -> int:
        shown = not item.suggestion_hidden
        base = dict(model_version=item.model_version, batch_id=item.batch_id, strategy=item.strategy,
                    score=item.score, rank=item.rank, percentile=item.percentile, audit=item.audit,
                    suggestion=item.suggestion if shown else None,
                    shown_probs=item.probs if (shown and item.probs) else None,
                    suggestion_hidden=item.suggestion_hidden if item.probs else None,
                    session_id=self.session_id)
        base.update(fields)
        with self._lock:
            event_id = self._insert(item.item_id, kind, base)
            self._decided_ids.add(item.item_id)
            self._advance(item.item_id)
            if kind in ("label", "skip", "flag"):
                self.decisions_session += 1
                self.decisions_since_train += kind == "label"
        return event_id

    def _insert(self, item_id: str, kind: str, fields: dict) -> int:
        return self.store.append_event(item_id, kind, self.actor, **fields)

    def check_labels(self, labels: list[str]) -> list[str]:
        unknown = [l for l in labels if l not in self.config.labels]
        if unknown:
            raise LabelloopError(f"unknown label(s) {', '.join(unknown)}")
        if not labels:
            raise LabelloopError("choose at least one label")
        if len(labels) > 1 and not self.config.multi_label:
            raise LabelloopError("this project takes one label per item")
        return labels

    @_store_guarded
    def label(self, item: QueueItem, labels: list[str], *, reason: str | None = None, note: str | None = None,
              duration_ms: float | None = None) -> int:
        """The annotator pressed a label key (or toggled labels and confirmed). A label that differs
        from the suggestion on screen is a correction: stored as one, with ``reason`` from the error
        taxonomy, or "unspecified" unless the project asks for a reason on every correction."""
        labels = self.check_labels(labels)
        shown = bool(item.suggestion) and not item.suggestion_hidden
        if shown and sorted(labels) != item.suggested_labels:
            if reason is None and self.config.ask_reason:
                raise LabelloopError("this project asks for a reason with every correction ([labels] ask_reason)")
            return self._correction(item, labels, reason or UNSPECIFIED, note, duration_ms)
        via = "key-agrees" if shown else "key"
        return self._append(item, "label", via=via, labels=labels, note=note or None, duration_ms=duration_ms)

    @_store_guarded
    def accept(self, item: QueueItem, *, duration_ms: float | None = None) -> int:
        if not item.suggestion or item.suggestion_hidden:
            raise LabelloopError("there is no suggestion to accept for this item; press a label key")
        return self._append(item, "label", via="accept", labels=item.suggested_labels, duration_ms=duration_ms)

    @_store_guarded
    def reject(self, item: QueueItem, labels: list[str], reason: str, note: str | None = None, *,
               duration_ms: float | None = None) -> int:
        """The suggestion was wrong: the right label and why, from the project's error taxonomy."""
        labels = self.check_labels(labels)
        return self._correction(item, labels, reason, note, duration_ms)

    def _correction(self, item: QueueItem, labels: list[str], reason: str, note: str | None,
                    duration_ms: float | None) -> int:
        if reason not in self.config.taxonomy and reason != UNSPECIFIED:
            raise LabelloopError(f"'{reason}' is not in the project's error taxonomy")
        return self._append(item, "label", via="correction", labels=labels, error_category=reason,
                            note=note or None, duration_ms=duration_ms)

    @_store_guarded
    def skip(self, item: QueueItem, reason: str | None = None, *, duration_ms: float | None = None) -> int:
        return self._append(item, "skip", note=reason or None, duration_ms=duration_ms)

    @_store_guarded
    def flag(self, item: QueueItem, note: str | None = None, *, duration_ms: float | None = None) -> int:
        return self._append(item, "flag", note=note or None, duration_ms=duration_ms)

    @_store_guarded
    def undo(self) -> QueueItem | None:
        """Take back this annotator's latest decision still standing (any depth, across sessions).
        The undo is itself an event; the item comes back to the front of the queue."""
        with self._lock:
            row = self.store.dicts("""
                SELECT e.event_id, e.item_id, e.kind, e.batch_id, e.strategy, e.score, e.rank, e.percentile, e.audit,
                       e.model_version, e.shown_probs, e.suggestion_hidden, i.text, i.metadata
                FROM effective_events e JOIN items i ON i.id = e.item_id
                WHERE e.actor = ? AND e.kind IN ('label', 'skip', 'flag') AND coalesce(e.via, '') <> 'import'
                ORDER BY e.event_id DESC LIMIT 1""", [self.actor])
            if not row:
                return None
            r = row[0]
            self._insert(r["item_id"], "undo", {"target_event": r["event_id"], "session_id": self.session_id})
            self._decided_ids.discard(r["item_id"])
            self.decisions_session = max(0, self.decisions_session - 1)
            probs = r["shown_probs"]
            if not probs:  # the suggestion was hidden or absent: take it from the queue row
                q = self.store.rows("SELECT probs FROM queue WHERE item_id = ? AND batch_id = ?", [r["item_id"], r["batch_id"]])
                probs = q[0][0] if q else None
            item = self._make_item({**r, "probs": probs, "position": None})
            if r["suggestion_hidden"] is not None:
                item.suggestion_hidden = bool(r["suggestion_hidden"])
            self._front.insert(0, item)
            return item

    # -- progress and history -----------------------------------------------------
    def progress(self) -> Progress:
        elapsed_h = (time.time() - self.session_started) / 3600
        per_hour = self.decisions_session / elapsed_h if elapsed_h > 1 / 120 and self.decisions_session else None
        return Progress(self.decisions_session, self.queue_length(), per_hour, 0)

    def guidelines(self) -> str:
        path = self.project.dir / self.config.guidelines
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return f"(no guidelines file at {path})"

    # -- the loop ------------------------------------------------------------------
    def retrain(self, *, project: Project | None = None, progress=None, executor=None, **kw):
        """Retrain, rescore and queue a new batch (``labelloop train``). From a worker thread pass
        ``project=self.worker_project()``; then hand the result's queue to ``set_queue`` on the UI thread.

        ``executor`` (a one-worker ``ProcessPoolExecutor``): the training and scoring run in that
        process, so they never compete with the caller's threads for the interpreter; the store is
        read before and written after, here (DuckDB allows one process per file)."""
        from labelloop.core.loop import train_and_queue
        p = project or self.project
        if executor is None:
            report = train_and_queue(p, progress=progress, **kw)
        else:
            report = _retrain_in_process(executor, p, progress, kw)
        if project is None:
            self.reload_queue()
        self.decisions_since_train = 0
        return report

    def next_items(self, n: int = 20) -> list[QueueItem]:
        """The next n items this annotator will see (``labelloop next``)."""
        with self._lock:
            return (self._front + self._queue)[:n]

    def metrics(self) -> dict:
        from labelloop.core.metrics import metrics_snapshot
        return metrics_snapshot(self.project)

    def worker_project(self) -> Project:
        """A Project for a background thread: same database, its own DuckDB cursor."""
        return Project(self.project.dir, self.config, Store(self.store.con.cursor(), self.store.path))
