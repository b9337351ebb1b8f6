"""The project API: every command and the workstation go through ``Service.handle(actor, op, args)``.

The operations, their typed requests and answers are in ``core/api/protocol.py`` (``OPS``); this
module's ``HANDLERS`` maps each name to the method that serves it, so a key press can be followed from
the workstation to the store by direct calls. The service owns the project's store, the assignment of
items to annotators (``core/api/assign.py``), the client message ids that make a resent decision count
once, and holds its collaborators: the retrain job (``jobs.py``), the gold items (``gold.py``), the
reviewer's desk (``review_desk.py``) and the whole-project reads (``reads.py``).

What the client says is checked, never trusted: the request is decoded against its type before a
handler runs, the actor comes from the transport (the peer's OS user on the socket), an item must be
leased to the actor before they decide it, and the provenance of a decision (batch, strategy, score,
rank, audit, model version, the probabilities shown) is read from the service's own queue.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

from labelloop.core.api import files, settings
from labelloop.core.api.assign import Assignment
from labelloop.core.api.folder import read_text_nofollow
from labelloop.core.api.gold import GoldDesk
from labelloop.core.api.jobs import Job, Retrainer
from labelloop.core.api.protocol import (
    OPS,
    ROLES,
    ApiError,
    StoreFailed,
    decode_request,
    encode_response,
    ops_for,
    request_args,
)
from labelloop.core.api.queue_desk import QueueDesk
from labelloop.core.api.reads import ProjectReads
from labelloop.core.api.review_desk import ReviewDesk
from labelloop.core.config import CONFIG_NAME
from labelloop.core.store import as_store_error
from labelloop.core.store.project import Project, current_actor
from labelloop.core.util.errors import LabelloopError, StoreError

UNSPECIFIED = "unspecified"  # the reason of a correction made with a label key, when none is asked for
SESSION_IDLE_SECONDS = 120  # a session not heard from for this long no longer counts as working
MAX_NEXT_ITEMS = 1000
DENIED_WINDOW_SECONDS = 60.0  # refusals of one user are logged once a minute, counted (see Service.deny)
ROLE_OPS = {role: ops_for(role) for role in ROLES}
ACTIONS = ("label", "accept", "correction", "skip", "flag")


def _utc(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


class Session:
    def __init__(self, session_id: str, actor: str, client: str, now: float, conn: object | None):
        self.id = session_id
        self.actor = actor
        self.client = client
        self.started = now
        self.last_seen = now
        self.decisions = 0
        self.conn = conn


class Service:
    """The project behind the API. Requests are served one at a time (``handle`` holds the service
    lock); a retrain job works beside them on its own cursor and takes the lock only to hand over its
    new batch; the whole-project reads run on cursors of their own, outside the lock."""

    def __init__(self, project_dir: Path | str, *, owner: str | None = None, compute: str = "process", clock=time.time):
        if compute not in ("process", "thread"):
            raise ValueError(f"compute must be process or thread, got {compute!r}")
        self.project = Project.open(project_dir)
        self.dir = self.project.dir
        self.config = self.project.config
        self.store = self.project.store
        self.owner = owner or current_actor()
        self.compute = compute
        self.clock = clock
        self.lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self._conns: dict[int, tuple[object, str]] = {}  # live transport connections and their users
        self.request_conn: object | None = None
        self.store_failure: StoreError | None = None
        self._denied: dict[str, dict] = {}  # actor -> this minute's refusals not yet logged (see deny)
        self.labels_since_train = 0
        self._msg_ids: dict[tuple[str, str], int] | None = None  # (actor, client message id) -> event id
        self.batch_id = self.store.latest_batch_id()
        self.started = clock()
        self.retrainer = Retrainer(self, compute)
        self.gold = GoldDesk(self)
        self.review = ReviewDesk(self)
        self.reads = ProjectReads(self)
        self.queue = QueueDesk(self)

    @property
    def assign(self) -> Assignment:
        """Who labels what (core/api/queue_desk.py)."""
        return self.queue.assign

    @property
    def msgs(self) -> dict[tuple[str, str], int]:
        """(actor, client message id) -> the event it stored: a resent request is answered, not stored."""
        if self._msg_ids is None:
            self._msg_ids = {(a, m): e for a, m, e, _k in self.store.client_messages()}
        return self._msg_ids

    def reset_message_ids(self) -> None:
        """Read the message ids from the store again on next use (an import adds some)."""
        self._msg_ids = None

    @property
    def job(self) -> Job | None:
        return self.retrainer.job

    def wait_job(self, timeout: float = 600) -> Job | None:
        """Block until the running retrain (if any) has finished (scripts and tests)."""
        return self.retrainer.wait(timeout)

    def warm_up(self) -> None:
        """Start the training process now, without holding up requests meanwhile."""
        self.retrainer.warm_up()

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        for actor in list(self._denied):
            self._log_denied_summary(actor)
        self.retrainer.close()
        self.reads.close()
        self.project.close()

    # -- roles -------------------------------------------------------------------------
    def roles_of(self, actor: str) -> list[str]:
        cfg = self.config
        listed = cfg.admins or cfg.reviewers or cfg.annotators
        roles = []
        if actor in cfg.admins or actor == self.owner:
            roles.append("admin")
        if actor in cfg.reviewers:
            roles.append("reviewer")
        if actor in cfg.annotators or not listed:
            roles.append("annotator")
        return roles

    def allowed(self, actor: str, op: str) -> bool:
        return any(op in ROLE_OPS[r] for r in self.roles_of(actor))

    def deny(self, actor: str, code: str, message: str, op: str) -> ApiError:
        """The refusal to answer, logged as a ``denied`` event: the first of each user's minute at once,
        the rest of that minute as one event with their count and first and last time (a client
        refused in a loop cannot fill the disk)."""
        now = self.clock()
        w = self._denied.get(actor)
        if w is not None and now - w["start"] < DENIED_WINDOW_SECONDS:
            w["more"] += 1
            w["last"], w["note"] = now, f"{op}: {message}"
        else:
            self._log_denied_summary(actor)
            self._denied[actor] = {"start": now, "more": 0, "first": now, "last": now, "note": ""}
            self._log_denied(actor, f"{op}: {message}")
        return ApiError(code, message)

    def _log_denied_summary(self, actor: str) -> None:
        w = self._denied.pop(actor, None)
        if w and w["more"]:
            self._log_denied(
                actor,
                f"{w['more']} more refusals between {_utc(w['first'])} and "
                f"{_utc(w['last'])} UTC, the last: {w['note']}",
            )

    def _log_denied(self, actor: str, note: str) -> None:
        try:
            self.store.append_event("", "denied", actor, note=note[:500])
        except Exception:  # a refusal is answered even when it cannot be logged
            pass

    # -- the one entry point -------------------------------------------------------------
    def handle(self, actor: str, op: str, args: dict | None = None, *, conn: object | None = None) -> dict:
        """Serve one request of ``actor`` (established by the transport): decode it against its type,
        check the caller's role, run the handler, answer in JSON types. Raises ApiError."""
        req = decode_request(op, args)
        spec = OPS[op]
        with self.lock:
            roles = self.roles_of(actor)
            if not roles:
                raise self.deny(
                    actor,
                    "unknown_user",
                    f"{actor} is not a member of this project; an admin can add them under [roles] "
                    f"in {self.dir / CONFIG_NAME}.",
                    op,
                )
            if not self.allowed(actor, op):
                raise self.deny(
                    actor,
                    "denied",
                    f"{actor} may not {spec.summary} in this project "
                    f"(it needs the {spec.role} role; {actor} has {', '.join(roles)}).",
                    op,
                )
            if conn is not None:
                self._conns[id(conn)] = (conn, actor)
            self.request_conn = conn
            if not spec.reads:
                return encode_response(op, self._run(op, actor, req))
        return encode_response(op, self._run(op, actor, req))

    def _run(self, op: str, actor: str, req) -> dict:
        """Run the handler. A failure of the store's disk answers store_failed and is remembered
        (``store_failure``) until a write succeeds again: nothing is refused in advance, so reads go on
        while the disk is full and writes resume once space is back, without a restart. Anything
        else fails this request only."""
        with nullcontext() if OPS[op].reads else self.lock:
            try:
                answer = HANDLERS[op](self, actor, **request_args(req))
            except ApiError:
                raise
            except Exception as exc:
                err = as_store_error(exc)
                if err is not None:
                    self.store_failure = err
                    raise StoreFailed(str(err)) from exc
                if isinstance(exc, LabelloopError):
                    raise ApiError("bad_request", str(exc)) from exc
                raise ApiError("internal", f"the server failed on {op}: {type(exc).__name__}") from exc
            if not OPS[op].reads:
                self.store_failure = None
            return answer

    def disconnected(self, conn: object) -> None:
        """A transport connection closed: its sessions end, and unless the same user is still connected
        otherwise, others may take the items they held."""
        with self.lock:
            _c, actor = self._conns.pop(id(conn), (None, None))
            for s in self.sessions.values():
                if s.conn is conn:  # kept, detached: a client that reconnects carries on with it
                    s.conn, actor = None, s.actor
            if actor is not None and self.queue.loaded and not any(a == actor for _c, a in self._conns.values()):
                self.queue.assign.release(actor, self.clock())

    # -- assignment ---------------------------------------------------------------------
    def _session(self, actor: str, session: str | None) -> Session | None:
        s = self.sessions.get(session) if isinstance(session, str) else None
        if s is None and isinstance(session, str) and 8 <= len(session) <= 40:
            # a session of a server that restarted: carry on with it (its count is in the store)
            s = Session(session, actor, "reconnected", self.clock(), self.request_conn)
            s.decisions = self.store.session_decisions(session, actor)
            self.sessions[session] = s
        if s is not None and s.actor != actor:
            raise ApiError("bad_request", "that session belongs to someone else")
        if s is not None:
            s.last_seen = self.clock()
            if s.conn is None:
                s.conn = self.request_conn
        return s

    def _others(self, actor: str) -> int:
        now = self.clock()
        return len(
            {
                s.actor
                for s in self.sessions.values()
                if s.actor != actor and s.conn is not None and now - s.last_seen < SESSION_IDLE_SECONDS
            }
        )

    def _serve(self, actor: str) -> dict | None:
        if self.gold.paused(actor):
            return None  # (the answer's "paused" says why; a decision already made stays stored)
        front = self.assign.front.get(actor)
        gold = None if front else self.gold.due(actor)
        if gold is not None:
            return self.gold.item(actor, gold)
        slot = self.assign.next_for(actor, self.clock())
        if slot is None:
            self._maybe_refill()
            return None
        return self.queue.item(actor, slot.row)

    def _state(self, actor: str, sess: Session | None) -> dict:
        job = self.job
        return {
            "left": self.assign.left_for(actor, self.clock()),
            "batch": self.batch_id,
            "paused": self.gold.pause_text(actor) if self.config.gold_pause else None,
            "retraining": bool(job and job.running),
            "job": job.to_dict() if job else None,
            "others": self._others(actor),
            "done_session": sess.decisions if sess else 0,
            "summary": self._summary(),
        }

    def _summary(self) -> str:
        """The labelling screen's summary line, recomputed when a new model version is stored."""
        from labelloop.core.measure.signs import summary_line
        from labelloop.core.store.reports import latest_measurement

        v = self.batch_id
        cached = getattr(self, "_summary_cache", None)
        if cached is None or cached[0] != v:
            cached = (v, summary_line(latest_measurement(self.store)))
            self._summary_cache = cached
        return cached[1]

    def _maybe_refill(self) -> None:
        """Nothing left to hand out: queue a new batch if the pool still has items."""
        if self.retrainer.running:
            return
        if self.assign.open_count(self.clock()) == 0 and self.store.unlabelled_pool() > 0:
            self._start_job("the queue is empty", {})

    def team(self) -> dict:
        return {
            "working": sorted(
                {
                    s.actor
                    for s in self.sessions.values()
                    if s.conn is not None and self.clock() - s.last_seen < SESSION_IDLE_SECONDS
                }
            ),
            "open_items": self.assign.open_count(self.clock()) if self.queue.loaded else None,
            "retraining": self.retrainer.running,
        }

    # -- checks shared by the handlers -------------------------------------------------------
    @staticmethod
    def check_msg_id(msg_id: str, what: str) -> None:
        if not 8 <= len(msg_id) <= 64:
            raise ApiError("bad_request", f"{what} needs a client message id (msg_id, 8-64 characters)")

    def check_labels(self, labels) -> list[str]:
        if labels is None:
            raise ApiError("bad_request", "labels must be a list of label names")
        unknown = [lab for lab in labels if lab not in self.config.labels]
        if unknown:
            raise ApiError("bad_request", f"unknown label(s) {', '.join(lab[:40] for lab in unknown)}")
        if not labels:
            raise ApiError("bad_request", "choose at least one label")
        if len(labels) > 1 and not self.config.multi_label:
            raise ApiError("bad_request", "this project takes one label per item")
        return sorted(set(labels))

    # -- labelling -----------------------------------------------------------------------
    def ping(self, actor: str) -> dict:
        return {"actor": actor}

    def open_session(self, actor: str, client: str = "cli") -> dict:
        now = self.clock()
        for old in [k for k, o in self.sessions.items() if o.conn is None and now - o.last_seen > 3600]:
            del self.sessions[old]
        sid = uuid.uuid4().hex[:12]
        sess = Session(sid, actor, client[:40], now, self.request_conn)
        self.sessions[sid] = sess
        cfg_path = self.dir / CONFIG_NAME
        return {
            "session": sid,
            "actor": actor,
            "roles": self.roles_of(actor),
            "config_toml": cfg_path.read_text(encoding="utf-8"),
            "config_path": str(cfg_path),
            "project_dir": str(self.dir),
            **self._state(actor, sess),
        }

    def close_session(self, actor: str, session: str | None = None) -> dict:
        s = self._session(actor, session)
        if s is not None:
            del self.sessions[s.id]
        return {}

    def next(self, actor: str, session: str | None = None) -> dict:
        sess = self._session(actor, session)
        paused = self.gold.pause_text(actor)
        if paused:
            raise self.deny(actor, "denied", paused, "next")
        return {"item": self._serve(actor), **self._state(actor, sess)}

    def decide(
        self,
        actor: str,
        item_id: str,
        action: str,
        msg_id: str,
        labels: list[str] | None = None,
        reason: str | None = None,
        note: str | None = None,
        duration_ms: float | None = None,
        session: str | None = None,
        lease: str | None = None,
    ) -> dict:
        """One decision on an item in the actor's hands, stored as one event with the provenance of
        the service's own queue slot; answers with the next item."""
        sess = self._session(actor, session)
        self.check_msg_id(msg_id, "every decision")
        done = self.msgs.get((actor, msg_id))
        if done is not None:  # a resend of a decision already stored: answer as before, store nothing
            return {"event_id": done, "duplicate": True, "item": self._serve(actor), **self._state(actor, sess)}
        if action not in ACTIONS:
            raise ApiError("bad_request", f"unknown action {action[:20]!r} ({', '.join(ACTIONS)})")
        gold = self.gold.held(actor, item_id)
        if gold is not None:
            event_id = self.gold.decide(actor, sess, gold, action, labels, note, duration_ms, msg_id)
            return self._decided(actor, sess, msg_id, event_id)
        row = self._leased_row(actor, item_id, lease)
        suggested = self.queue.suggested(actor, row)
        kind = action if action in ("skip", "flag") else "label"
        labels, fields = (None, {}) if kind != "label" else self._labels_and_via(action, labels, reason, suggested)
        probs = json.loads(row["probs"]) if row.get("probs") else None
        hidden = bool(probs) and self.queue.blind(actor, item_id)
        event_id = self.store.append_event(
            item_id,
            kind,
            actor,
            labels=labels,
            note=(note or None),
            duration_ms=float(duration_ms) if duration_ms is not None else None,
            model_version=row.get("model_version"),
            batch_id=row.get("batch_id"),
            strategy=row.get("strategy"),
            score=row.get("score"),
            rank=row.get("rank"),
            percentile=row.get("percentile"),
            audit=bool(row.get("audit")),
            suggestion="|".join(suggested) or None,
            shown_probs=probs if (probs and not hidden) else None,
            suggestion_hidden=hidden if probs else None,
            session_id=sess.id if sess else None,
            client_msg_id=msg_id,
            **fields,
        )
        self.assign.record(actor, item_id, kind, "|".join(labels) if kind == "label" else None)
        self.gold.counted(actor)
        if kind == "label":
            self._count_label()
        return self._decided(actor, sess, msg_id, event_id)

    def _decided(self, actor: str, sess: Session | None, msg_id: str, event_id: int) -> dict:
        self.msgs[(actor, msg_id)] = event_id
        if sess is not None:
            sess.decisions += 1
        return {"event_id": event_id, "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}

    def _leased_row(self, actor: str, item_id: str, lease: str | None) -> dict:
        """The queue row of an item in the actor's hands; ApiError when it is not."""
        slot = self.assign.slots.get(item_id)
        now = self.clock()
        if (
            slot is not None
            and not self.assign.holds(actor, item_id)
            and self.queue.lease_proof_ok(actor, item_id, lease)
            and self.assign.may_take(slot, actor, now)
            and not any(e > now for e in slot.leases.values())
        ):
            # the item was handed to this actor (the proof says so) by a server that has restarted since
            # (leases live in memory); nobody holds it now, so the resent decision stands
            slot.leases[actor] = now + self.assign.lease_seconds
        if slot is None or not self.assign.holds(actor, item_id):
            if slot is None and not self.store.item_exists(item_id):
                raise ApiError("unknown_item", f"there is no item {item_id[:60]!r} in this project")
            raise ApiError(
                "not_leased", f"item {item_id[:60]!r} is not in your hands (ask for the next item); nothing was stored"
            )
        return slot.row

    def _labels_and_via(self, action: str, labels, reason: str | None, suggested: list[str]) -> tuple[list, dict]:
        """The labels a label decision stores and how they were given: the suggestion accepted, a key
        that agrees with it or not (a correction, with its reason from the taxonomy)."""
        if action == "accept":
            if not suggested:
                raise ApiError("bad_request", "there is no suggestion to accept for this item; press a label key")
            return suggested, {"via": "accept"}
        labels = self.check_labels(labels)
        if action == "correction" or (suggested and sorted(labels) != suggested):
            if reason is None and action == "label" and self.config.ask_reason:
                raise ApiError(
                    "bad_request", "this project asks for a reason with every correction ([labels] ask_reason)"
                )
            reason = reason or UNSPECIFIED
            if reason not in self.config.taxonomy and reason != UNSPECIFIED:
                raise ApiError("bad_request", f"'{reason[:60]}' is not in the project's error taxonomy")
            return labels, {"via": "correction", "error_category": reason}
        return labels, {"via": "key-agrees" if suggested else "key"}

    def _count_label(self) -> None:
        """One more label toward the retrain cadence ([loop] retrain_every)."""
        self.labels_since_train += 1
        every = self.config.retrain_every
        if every and self.labels_since_train >= every and not self.retrainer.running:
            # labels given while the previous retrain ran count toward the next one (at most one
            # retrain's worth, so a slow trainer does not retrain back to back forever)
            carry = min(self.labels_since_train - every, every - 1)
            self._start_job(f"auto-retrain after {every} labels", {})
            self.labels_since_train = carry

    def undo(self, actor: str, msg_id: str, session: str | None = None) -> dict:
        """Take back this actor's latest decision still standing (any depth, across sessions). The
        undo is itself an event; the item comes back to this actor first."""
        sess = self._session(actor, session)
        self.check_msg_id(msg_id, "an undo")
        if (actor, msg_id) in self.msgs:
            return {"undone": None, "duplicate": True, "item": self._serve(actor), **self._state(actor, sess)}
        last = self.store.latest_decision(actor)
        if last is None:
            return {"undone": None, "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}
        event_id = self.store.append_event(
            last["item_id"],
            "undo",
            actor,
            target_event=last["event_id"],
            session_id=sess.id if sess else None,
            client_msg_id=msg_id,
        )
        self.msgs[(actor, msg_id)] = event_id
        if sess is not None:
            sess.decisions = max(0, sess.decisions - 1)
        gold_item = self.gold.undone(actor, last["item_id"])
        if gold_item is not None:  # a gold item comes back to this annotator first
            return {"undone": last["item_id"], "duplicate": False, "item": gold_item, **self._state(actor, sess)}
        rows = self.store.queue_rows(item_ids=[last["item_id"]]) if last["item_id"] not in self.assign.slots else []
        row = next((r for r in rows if r["batch_id"] == last["batch_id"]), rows[0] if rows else None)
        self.assign.unrecord(actor, last["item_id"], last["kind"], row, self.clock())
        if last["kind"] == "label":
            self.labels_since_train = max(0, self.labels_since_train - 1)
        return {"undone": last["item_id"], "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}

    def progress(self, actor: str, session: str | None = None) -> dict:
        sess = self._session(actor, session)
        st = self._state(actor, sess)
        per_hour = None
        if sess is not None:
            elapsed_h = (self.clock() - sess.started) / 3600
            per_hour = sess.decisions / elapsed_h if elapsed_h > 1 / 120 and sess.decisions else None
        return {**st, "per_hour": per_hour}

    def guidelines(self, actor: str) -> dict:
        path = self.dir / self.config.guidelines
        try:
            if not path.resolve().is_relative_to(self.dir.resolve()):
                raise OSError("outside the project folder")
            return {"text": read_text_nofollow(path)}
        except (OSError, UnicodeDecodeError):
            return {"text": f"(no readable guidelines file at {path})"}

    def next_items(self, actor: str, n: int = 20, session: str | None = None) -> dict:
        if n < 1:
            raise ApiError("bad_request", f"n must be a whole number of at least 1, got {n!r}")
        slots = self.assign.upcoming(actor, self.clock(), min(n, MAX_NEXT_ITEMS))
        return {"items": [self.queue.item(actor, s.row) for s in slots]}

    # -- whole-project reads (reads.py) -------------------------------------------------------
    def metrics(self, actor: str, arms: bool = False) -> dict:
        return self.reads.metrics(arms)

    def status(self, actor: str) -> dict:
        return self.reads.status()

    def check(self, actor: str) -> dict:
        return self.reads.check()

    # -- retraining (jobs.py) ----------------------------------------------------------------
    def retrain_start(
        self,
        actor: str,
        why: str = "asked for",
        strategy: str | None = None,
        batch: int | None = None,
        seed: int | None = None,
    ) -> dict:
        kw = {k: v for k, v in (("strategy", strategy), ("batch_size", batch), ("seed", seed)) if v is not None}
        if kw and "admin" not in self.roles_of(actor):
            raise self.deny(
                actor,
                "denied",
                f"{actor} may retrain but not choose the strategy, batch or seed (admins only)",
                "retrain_start",
            )
        if self.retrainer.running:
            return {"job": self.job.to_dict(), "started": False}
        return {"job": self._start_job(why[:80], kw).to_dict(), "started": True}

    def retrain_poll(self, actor: str, job: int | None = None) -> dict:
        j = self.job
        if j is None or (job is not None and j.id != job):
            raise ApiError("bad_request", f"no retrain job {job}")
        return {"job": j.to_dict(), "batch": self.batch_id}

    def _start_job(self, why: str, kw: dict) -> Job:
        self.labels_since_train = 0
        return self.retrainer.start(why, kw)

    # -- review (review_desk.py) -------------------------------------------------------------
    def review_queue(self, actor: str, include_decided: bool = False) -> dict:
        return self.review.queue(include_decided)

    def review_item(self, actor: str, item_id: str) -> dict:
        return self.review.item(item_id)

    def adjudicate(
        self, actor: str, item_id: str, labels: list[str], msg_id: str, rationale: str | None = None
    ) -> dict:
        return self.review.adjudicate(actor, item_id, labels, msg_id, rationale)

    def undo_adjudication(self, actor: str, msg_id: str) -> dict:
        return self.review.undo(actor, msg_id)

    def send_back(self, actor: str, item_id: str, reason: str, msg_id: str) -> dict:
        return self.review.send_back(actor, item_id, reason, msg_id)


HANDLERS = {
    "ping": Service.ping,
    "open_session": Service.open_session,
    "close_session": Service.close_session,
    "next": Service.next,
    "decide": Service.decide,
    "undo": Service.undo,
    "progress": Service.progress,
    "poll": Service.progress,
    "guidelines": Service.guidelines,
    "metrics": Service.metrics,
    "status": Service.status,
    "check": Service.check,
    "next_items": Service.next_items,
    "retrain_start": Service.retrain_start,
    "retrain_poll": Service.retrain_poll,
    "export": files.export,
    "review_queue": Service.review_queue,
    "review_item": Service.review_item,
    "adjudicate": Service.adjudicate,
    "undo_adjudication": Service.undo_adjudication,
    "send_back": Service.send_back,
    "import": files.import_,
    "model_export": files.model_export,
    "model_import": files.model_import,
    "config_set": settings.config_set,
    "pool_register": files.pool_register,
}
"""Operation name -> the method that serves it (the protocol's OPS says what it takes and answers)."""
