"""The Workspace: one annotator's session, as the workstation and scripts use it.

A thin client of the project API (``core.api.service``): every decision is one request, answered once the
event is committed, and the answer carries the next item. It works the same over either transport
(in-process, or the Unix socket of ``labelloop serve``): ``Workspace(dir)`` picks the server when one
runs for the project.

The item on screen is the one the service leased to this annotator: it stays theirs (and on screen)
until they decide it, whatever batch a retrain brings meanwhile.
"""

from __future__ import annotations

import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from labelloop.core.api.client import Client, connect, retrain_and_wait
from labelloop.core.api.protocol import ApiError, StoreFailed  # noqa: F401  (re-exported)
from labelloop.core.config import parse_config
from labelloop.core.store import as_store_error  # noqa: F401  (re-exported for the CLI)


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
    lease: str | None = field(default=None, compare=False, repr=False)  # the server's proof it was handed out
    review_note: str | None = None  # why a reviewer sent the item back

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
        if self.review_note:
            return f"sent back by a reviewer: {self.review_note}"
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
    others: int = 0


class Report(dict):
    """A retrain report (the API's dict) with attribute access: ``r.metrics``, ``r.model_version``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def new_msg_id() -> str:
    """A client message id: one per decision, kept when the decision is sent again."""
    return uuid.uuid4().hex


def _item(d: dict | None) -> QueueItem | None:
    if d is None:
        return None
    return QueueItem(
        d["item_id"],
        d["text"],
        d.get("metadata") or {},
        d.get("batch_id"),
        d.get("position"),
        d.get("strategy"),
        d.get("score"),
        d.get("rank"),
        d.get("percentile"),
        bool(d.get("audit")),
        d.get("model_version"),
        d.get("probs") or {},
        bool(d.get("suggestion_hidden")),
        bool(d.get("multi_label")),
        d.get("lease"),
        d.get("review_note"),
    )


class Workspace:
    """One annotator's session on a project, over the project API."""

    def __init__(
        self,
        project_dir: Path | str | None = None,
        *,
        actor: str | None = None,
        client: Client | None = None,
        compute: str = "process",
    ):
        self.client = client or connect(project_dir, actor=actor, compute=compute)
        hello = self.client.call("open_session", client="workstation")
        self.actor = hello["actor"]
        self.roles = hello["roles"]
        self.session_id = hello["session"]
        self.project_dir = Path(hello["project_dir"])
        self.config = parse_config(tomllib.loads(hello["config_toml"]), Path(hello["config_path"]))
        self.transport = self.client.transport
        self.store_failure: StoreFailed | None = None
        self._current: QueueItem | None = None
        self.left = 0
        self.batch = None
        self.retraining = False
        self.job: dict | None = None
        self.others = 0
        self.summary = ""  # the service's one line on whether AL is working (core/measure.summary_line)
        self.decisions_session = 0
        self.paused: str | None = None  # [team] gold_pause: why this annotator gets no more items
        self.session_started = time.time()
        self._update(self.client.call("next", session=self.session_id))

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.client.call("close_session", session=self.session_id)
        except Exception:  # the store or the server may be gone; the session ends anyway
            pass
        self.client.close()

    def retry_seconds(self, seconds: float) -> None:
        """How long one call keeps trying to reach a server that went away before it raises ServerGone
        (the workstation sets 0: its link retries by itself and says so on screen)."""
        if hasattr(self.client, "reconnect_seconds"):
            self.client.reconnect_seconds = seconds

    def warm_up(self) -> None:
        """Start what the first retrain needs (the training process, in-process) in the background."""
        self.client.warm_up()

    @property
    def service(self):
        """The in-process service (None over the socket): tests and benchmarks look inside."""
        return getattr(self.client, "service", None)

    @property
    def store(self):
        return self.service.store if self.service is not None else None

    @property
    def project(self):
        return self.service.project if self.service is not None else None

    # -- talking to the service ------------------------------------------------------------------
    def call(self, op: str, **args) -> dict:
        if self.store_failure is not None:
            raise self.store_failure
        try:
            return self.client.call(op, **args)
        except StoreFailed as exc:
            self.store_failure = exc
            raise

    def _update(self, answer: dict) -> dict:
        if "item" in answer:
            new = _item(answer["item"])
            # the same item as before keeps its object (the screen compares what it shows)
            if not (new is not None and self._current is not None and new == self._current):
                self._current = new
        self.left = answer.get("left", self.left)
        self.batch = answer.get("batch", self.batch)
        self.retraining = answer.get("retraining", self.retraining)
        self.job = answer.get("job", self.job)
        self.others = answer.get("others", self.others)
        self.decisions_session = answer.get("done_session", self.decisions_session)
        self.paused = answer.get("paused")
        self.summary = answer.get("summary", getattr(self, "summary", ""))
        return answer

    # -- queue -------------------------------------------------------------------------------------
    def current(self) -> QueueItem | None:
        return self._current

    def queue_length(self) -> int:
        return self.left

    def refresh(self) -> QueueItem | None:
        """Ask for the current item again (after a new batch arrived while the queue was empty)."""
        self._update(self.call("next", session=self.session_id))
        return self._current

    def next_items(self, n: int = 20) -> list[QueueItem]:
        """The next n items this annotator will see (``labelloop next``)."""
        return [_item(d) for d in self.call("next_items", n=n, session=self.session_id)["items"]]

    # -- decisions -----------------------------------------------------------------------------------
    def _decide(self, item: QueueItem, action: str, msg_id: str | None = None, **args) -> int:
        """``msg_id``: the client's id of this decision, fixed when the key was pressed; a decision sent
        again with the same id (after the server came back) is stored once."""
        answer = self.call(
            "decide",
            item_id=item.item_id,
            action=action,
            msg_id=msg_id or new_msg_id(),
            session=self.session_id,
            lease=item.lease,
            **{k: v for k, v in args.items() if v is not None},
        )
        self._update(answer)
        return answer["event_id"]

    def label(
        self,
        item: QueueItem,
        labels: list[str],
        *,
        reason: str | None = None,
        note: str | None = None,
        duration_ms: float | None = None,
        msg_id: str | None = None,
    ) -> int:
        """The annotator pressed a label key (or toggled labels and confirmed). A label that differs
        from the suggestion on screen is stored as a correction (reason from the taxonomy, or
        "unspecified" unless the project asks for a reason on every correction)."""
        return self._decide(
            item, "label", msg_id, labels=list(labels), reason=reason, note=note or None, duration_ms=duration_ms
        )

    def accept(self, item: QueueItem, *, duration_ms: float | None = None, msg_id: str | None = None) -> int:
        return self._decide(item, "accept", msg_id, duration_ms=duration_ms)

    def correction(
        self,
        item: QueueItem,
        labels: list[str],
        reason: str,
        note: str | None = None,
        *,
        duration_ms: float | None = None,
        msg_id: str | None = None,
    ) -> int:
        """The suggestion was wrong: the right label and why, from the project's error taxonomy."""
        return self._decide(
            item, "correction", msg_id, labels=list(labels), reason=reason, note=note or None, duration_ms=duration_ms
        )

    def skip(
        self, item: QueueItem, reason: str | None = None, *, duration_ms: float | None = None, msg_id: str | None = None
    ) -> int:
        return self._decide(item, "skip", msg_id, note=reason or None, duration_ms=duration_ms)

    def flag(
        self, item: QueueItem, note: str | None = None, *, duration_ms: float | None = None, msg_id: str | None = None
    ) -> int:
        return self._decide(item, "flag", msg_id, note=note or None, duration_ms=duration_ms)

    def undo(self, msg_id: str | None = None) -> QueueItem | None:
        """Take back this annotator's latest decision still standing; the item comes back first."""
        answer = self._update(self.call("undo", msg_id=msg_id or new_msg_id(), session=self.session_id))
        return self._current if answer.get("undone") is not None else None

    # -- progress, guidelines, metrics ------------------------------------------------------------------
    def progress(self) -> Progress:
        elapsed_h = (time.time() - self.session_started) / 3600
        n = self.decisions_session
        per_hour = n / elapsed_h if elapsed_h > 1 / 120 and n else None
        return Progress(n, self.left, per_hour, self.others)

    def poll(self) -> dict:
        """Refresh what the service says (retrain running, new batch, others working)."""
        answer = self._update(self.call("poll", session=self.session_id))
        if self._current is None and not self.retraining and not self.paused:
            self.refresh()
        return answer

    def guidelines(self) -> str:
        return self.call("guidelines")["text"]

    def metrics(self, arms: bool = False) -> dict:
        return self.call("metrics", arms=arms)

    # -- the loop --------------------------------------------------------------------------------------
    def retrain_start(self, why: str = "asked for", **kw) -> dict:
        answer = self.call("retrain_start", why=why, **kw)
        self.job, self.retraining = answer["job"], answer["job"]["running"]
        return answer

    def retrain(self, *, timeout: float = 600, **kw) -> Report:
        """Retrain now and wait for the new batch (``labelloop train``); options: strategy, batch, seed."""
        try:
            job = retrain_and_wait(self.client, "asked for", timeout=timeout, **kw)
        finally:
            self.retraining = False
        self.job = job
        self.refresh()
        return Report(job["report"])
