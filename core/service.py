"""The project API: every command and the workstation go through ``Service.handle(actor, op, args)``.

Requests and answers are plain dicts of JSON types, the same in both transports: in-process (one
user, no server; ``core.client.LocalClient``) and the Unix socket of ``labelloop serve``
(``core.server``). The service owns the project's store, the assignment of items to annotators
(``core.assign``), the client message ids that make a resent decision count once, and the retrain job
(one at a time; the training runs in a child process or a thread, reading and writing the store
through its own cursor).

What the client says is checked, never trusted: the actor comes from the transport (the peer's OS
user on the socket), an item must be leased to the actor before they decide it, and the provenance
of a decision (batch, strategy, score, rank, audit, model version, the probabilities shown) is read
from the service's own queue.

Ops (args) -> answer:
  open_session(client)                 -> {session, actor, roles, config_toml, config_path, project_dir, item, ...}
  close_session(session)               -> {}
  next(session)                        -> {item, left, batch, retraining, others}
  decide(item_id, action, msg_id, labels, reason, note, duration_ms, session)
                                       -> {event_id, duplicate, item, left, ...}   action: label|accept|correct|skip|flag
  undo(msg_id, session)                -> {undone: item_id | None, item, ...}
  progress(session) / poll(session)    -> {done_session, left, per_hour, batch, retraining, job, others}
  guidelines()                         -> {text}
  metrics(arms)                        -> {snapshot, arms | None, arms_pending}
  status()                             -> project_status dict
  next_items(n, session)               -> {items}
  retrain_start(why, strategy, batch, seed) -> {job}
  retrain_poll(job)                    -> {job}
  export(path, what)                   -> {path, what, rows, seconds}
  import(path, ... importer options)   -> import report dict
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import inspect
import json
import os
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import duckdb

from labelloop.core.assign import Assignment, Slot
from labelloop.core.config import CONFIG_NAME
from labelloop.core.errors import LabelloopError, StoreError
from labelloop.core.project import Project, current_actor
from labelloop.core.safeio import atomic_write_bytes
from labelloop.core.store import Store, store_error_text

UNSPECIFIED = "unspecified"   # the reason of a correction made with a label key, when none is asked for
_STORE_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT}
SESSION_IDLE_SECONDS = 120     # a session not heard from for this long no longer counts as working
MAX_NEXT_ITEMS = 1000

# What each role may do. Admins may do everything; reviewers annotate and export.
ANNOTATOR_OPS = frozenset({"open_session", "close_session", "next", "decide", "undo", "progress", "poll",
                           "guidelines", "metrics", "status", "next_items", "retrain_start", "retrain_poll", "ping",
                           "check"})
REVIEWER_OPS = ANNOTATOR_OPS | {"export", "review_queue", "review_item", "adjudicate", "undo_adjudication",
                                 "send_back"}
ADMIN_OPS = REVIEWER_OPS | {"import", "retrain_options", "model_export", "model_import"}
ROLE_OPS = {"annotator": ANNOTATOR_OPS, "reviewer": REVIEWER_OPS, "admin": ADMIN_OPS}
# Reads that scan the whole project (status, metrics): served on a cursor of their own, outside the
# service lock, so they never hold up decisions (the server runs them on its reader thread).
READ_OPS = frozenset({"status", "metrics", "check"})


class ApiError(LabelloopError):
    """An answer of the API that is an error: a code a program can test and one sentence for people.

    Codes: bad_request, unknown_op, unknown_item, not_leased, unknown_user, denied, store_failed,
    too_large, busy, server_gone, internal."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class StoreFailed(ApiError, StoreError):
    """The project store failed: every decision before it is saved; nothing more is taken."""

    def __init__(self, message: str):
        ApiError.__init__(self, "store_failed", message)


def as_store_error(exc: BaseException) -> StoreError | None:
    """A StoreError for failures of the project store or its disk (DuckDB errors, a full disk, an I/O
    error); None for anything else."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, duckdb.Error) or (isinstance(exc, OSError) and exc.errno in _STORE_ERRNOS):
        return StoreError(f"the project store failed ({store_error_text(exc)}); every decision before it is saved.")
    return None


def jsonable(value):
    """The same value in JSON types (dates become ISO strings): what the socket would carry."""
    return json.loads(json.dumps(value, default=str))


def training_executor():
    """One spawned worker process for training and scoring (its imports warm up in the background).
    Its stderr is /dev/null: under the workstation the terminal must not receive its output, and
    Textual's print capture has no file descriptor to hand on."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    from labelloop.core.loop import warm_up, worker_quiet
    captured = sys.stderr
    with open(os.devnull, "w") as devnull:
        try:
            sys.stderr = devnull
            executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=worker_quiet)
            executor.submit(warm_up)
        finally:
            sys.stderr = captured
    return executor


def stop_executor(executor) -> None:
    """Abandon a training process (a retrain still computing stores nothing)."""
    for proc in list(getattr(executor, "_processes", {}).values()):
        try:
            proc.terminate()
        except Exception:
            pass
    executor.shutdown(wait=False, cancel_futures=True)


def _retrain_in_process(executor, project: Project, progress, kw: dict):
    """plan (here) -> compute (in the executor's process) -> commit (here). A feature cache the worker
    cannot read is rebuilt here once and the round retried."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from labelloop.core.features import FeatureCacheError, invalidate_feature_cache
    from labelloop.core.loop import commit_round, compute_round, plan_round
    for attempt in range(2):
        progress(0.05, "reading the store")
        inp = plan_round(project, keep_features=False, **kw)
        inp.feats = None  # the worker reads the cache itself; never ship the matrix through a pipe
        future = executor.submit(compute_round, inp)
        progress(0.2, "training in a separate process")
        try:
            while True:
                try:
                    out = future.result(timeout=0.1)
                    break
                except FutureTimeout:
                    try:
                        progress(0.5, "training in a separate process")
                    except BaseException:
                        future.cancel()
                        raise
        except FeatureCacheError:
            if attempt:
                raise
            invalidate_feature_cache(Path(inp.cache_dir))
            continue
        progress(0.9, "queueing")
        return commit_round(project, inp, out)


def report_dict(r) -> dict:
    """A TrainReport as the API gives it."""
    return jsonable({"model_version": r.model_version, "batch_id": r.batch_id, "batch_size": r.batch_size,
                     "strategy": r.strategy, "n_train": r.n_train, "metrics": r.metrics, "adequacy": r.adequacy,
                     "signals": r.signals, "warnings": r.warnings, "notes": r.notes, "seconds": r.seconds})


class _Cancelled(Exception):
    pass


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()


class _InProcess:
    """Marks the connection of an in-process client (core.client.LocalClient)."""


class Job:
    """One retrain: plan, compute (child process or thread), commit, then the new batch is served."""

    def __init__(self, job_id: int, why: str, kw: dict):
        self.id = job_id
        self.why = why
        self.kw = kw
        self.started = time.time()
        self.finished: float | None = None
        self.fraction = 0.0
        self.step = "starting"
        self.report: dict | None = None
        self.error: str | None = None
        self.cancel = False
        self.thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.finished is None

    def to_dict(self) -> dict:
        return {"id": self.id, "why": self.why, "running": self.running, "fraction": self.fraction,
                "step": self.step, "report": self.report, "error": self.error,
                "seconds": round((self.finished or time.time()) - self.started, 2)}


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
    new batch."""

    def __init__(self, project_dir: Path | str, *, owner: str | None = None, compute: str = "process",
                 clock=time.time):
        if compute not in ("process", "thread"):
            raise ValueError(f"compute must be process or thread, got {compute!r}")
        self.project = Project.open(project_dir)
        self.dir = self.project.dir
        self.config = self.project.config
        self.store = self.project.store
        self.owner = owner or current_actor()
        self.compute = compute
        self.clock = clock
        self._lock = threading.RLock()
        self.sessions: dict[str, Session] = {}
        self._conns: dict[int, tuple[object, str]] = {}   # live transport connections and their users
        self._request_conn: object | None = None
        self._readers = threading.local()
        self.store_failure: StoreError | None = None
        self.job: Job | None = None
        self._job_ids = 0
        self._executor = None
        self._arms: dict | None = None        # {"version": v, "arms": {...}} cached learning curves by arm
        self._arms_thread: threading.Thread | None = None
        self.labels_since_train = 0
        self._assign: Assignment | None = None                  # built on first use (see assign)
        self._msg_ids: dict[tuple[str, str], int] | None = None  # (actor, client message id) -> event id
        self.batch_id = self.store.latest_batch_id()
        self.started = clock()
        self._key: bytes | None = None
        self._gold_state: dict | None = None
        self._ops = {name[3:]: getattr(self, name) for name in dir(self) if name.startswith("op_")}
        self._signatures = {op: inspect.signature(fn) for op, fn in self._ops.items()}

    @property
    def assign(self) -> Assignment:
        """Who labels what: read from the store on first use (a one-off ``status`` never needs it)."""
        if self._assign is None:
            cfg = self.config
            self._assign = Assignment(share=cfg.overlap_share, per_item=cfg.annotators_per_item,
                                      lease_seconds=cfg.lease_minutes * 60, skip_hides=cfg.skip_hides,
                                      flag_hides=cfg.flag_hides, tie_breaker=cfg.tie_breaker)
            self._load_assignment(self.store)
        return self._assign

    @property
    def _msgs(self) -> dict[tuple[str, str], int]:
        if self._msg_ids is None:
            self._msg_ids = {(a, m): e for a, m, e, _k in self.store.client_messages()}
        return self._msg_ids

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            job = self.job
            if job is not None and job.running:
                job.cancel = True
            executor, self._executor = self._executor, None
        if executor is not None:
            stop_executor(executor)
        if job is not None and job.thread is not None:
            job.thread.join(timeout=30)
        if self._arms_thread is not None:
            self._arms_thread.join(timeout=30)
        self.project.close()

    def _reader(self) -> Project:
        """A Project on this thread's own cursor, for the READ_OPS."""
        local = self._readers
        if getattr(local, "project", None) is None:
            local.project = Project(self.dir, self.config, Store(self.store.cursor(), self.store.path))
        return local.project

    def warm_up(self) -> None:
        """Start the training process now (its imports take a second or two of CPU), without holding
        up requests meanwhile."""
        if self.compute != "process" or self._executor is not None:
            return
        executor = training_executor()
        with self._lock:
            if self._executor is None:
                self._executor, executor = executor, None
        if executor is not None:  # a retrain started one meanwhile
            stop_executor(executor)

    def _training_process(self):
        if self._executor is None:
            self._executor = training_executor()
        return self._executor

    # -- roles -------------------------------------------------------------------------
    def roles_of(self, actor: str) -> list[str]:
        cfg = self.config
        listed = cfg.admins or cfg.reviewers or cfg.annotators
        roles = []
        if actor == self.owner or actor in cfg.admins:
            roles.append("admin")
        if actor in cfg.reviewers:
            roles.append("reviewer")
        if actor in cfg.annotators or not listed:
            roles.append("annotator")
        return roles

    def allowed(self, actor: str, op: str) -> bool:
        return any(op in ROLE_OPS[r] for r in self.roles_of(actor))

    def _deny(self, actor: str, code: str, message: str, op: str) -> ApiError:
        try:
            self.store.append_event("", "denied", actor, note=f"{op}: {message}"[:500])
        except Exception:  # a refusal is answered even when it cannot be logged
            pass
        return ApiError(code, message)

    # -- the one entry point -------------------------------------------------------------
    def handle(self, actor: str, op: str, args: dict | None = None, *, conn: object | None = None) -> dict:
        """Serve one request of ``actor`` (established by the transport). Raises ApiError."""
        args = args or {}
        if not isinstance(op, str) or op not in self._ops:
            raise ApiError("unknown_op", f"unknown operation {str(op)[:40]!r}")
        if not isinstance(args, dict) or "conn" in args or "actor" in args:
            raise ApiError("bad_request", "args must be an object of the operation's arguments")
        with self._lock:
            if self.store_failure is not None:
                raise StoreFailed(str(self.store_failure))
            roles = self.roles_of(actor)
            if not roles:
                raise self._deny(actor, "unknown_user",
                                 f"{actor} is not a member of this project; an admin can add them under [roles] "
                                 f"in {self.dir / CONFIG_NAME}.", op)
            if not self.allowed(actor, op):
                need = next(r for r in ("annotator", "reviewer", "admin") if op in ROLE_OPS[r])
                raise self._deny(actor, "denied", f"{actor} may not {op.replace('_', ' ')} in this project "
                                 f"(it needs the {need} role; {actor} has {', '.join(roles)}).", op)
            if conn is not None:
                self._conns[id(conn)] = (conn, actor)
            self._request_conn = conn
            try:
                bound = self._signatures[op].bind(actor, **args)
            except TypeError as exc:
                raise ApiError("bad_request", f"{op}: {exc}") from None
            if op not in READ_OPS:
                return self._run(op, bound, conn)
        return self._run(op, bound, conn)

    def _run(self, op: str, bound, conn) -> dict:
        with self._lock if op not in READ_OPS else _NO_LOCK:
            if self.store_failure is not None:
                raise StoreFailed(str(self.store_failure))
            try:
                result = self._ops[op](*bound.args, **bound.kwargs, **({"conn": conn} if op == "open_session" else {}))
            except ApiError:
                raise
            except LabelloopError as exc:
                err = as_store_error(exc)
                if err is None:
                    raise ApiError("bad_request", str(exc)) from exc
                self.store_failure = err
                raise StoreFailed(str(err)) from exc
            except Exception as exc:
                err = as_store_error(exc)
                if err is None:
                    raise
                self.store_failure = err
                raise StoreFailed(str(err)) from exc
            return result

    def disconnected(self, conn: object) -> None:
        """A transport connection closed: its sessions end, and unless the same user is still connected
        otherwise, others may take the items they held."""
        with self._lock:
            _c, actor = self._conns.pop(id(conn), (None, None))
            for s in self.sessions.values():
                if s.conn is conn:  # kept, detached: a client that reconnects carries on with it
                    s.conn, actor = None, s.actor
            if actor is not None and self._assign is not None \
                    and not any(a == actor for _c, a in self._conns.values()):
                self._assign.release(actor, self.clock())

    # -- assignment ---------------------------------------------------------------------
    def _load_assignment(self, store: Store) -> None:
        """From the store: items owed labels (started, not complete), then the latest batch."""
        decisions = store.decisions_on(None)
        per_item: dict[str, list] = {}
        for d in decisions:
            per_item.setdefault(d[0], []).append(d)
        owed = []
        for item_id, ds in per_item.items():
            probe = Slot(item_id, {}, self._assign.need(item_id))
            for _i, a, k, lab in ds:
                if k == "label":
                    probe.labelled[a] = lab
                else:
                    probe.passed[a] = k
            self._assign.adjust_need(probe)
            if not self._assign.complete(probe):
                owed.append(item_id)
        from labelloop.core.store import review
        back = review.sent_back(store)   # items a reviewer sent back: served first, with the reason
        rows = store.queue_rows(item_ids=list(back) + owed)
        for r in rows:
            if r["item_id"] in back:
                r["review_note"] = back[r["item_id"]]
        rows.sort(key=lambda r: (r["item_id"] not in back, r["batch_id"], r["position"]))
        if self.batch_id is not None:
            rows += store.queue_rows(batch_id=self.batch_id)
        ids = {r["item_id"] for r in rows}
        self._assign.load(rows, [d for d in decisions if d[0] in ids])

    def _new_batch(self, store: Store) -> None:
        """Serve the batch a retrain queued. Its rows (the slow read: a join with every item) are read
        before taking the lock; the decisions on them under it, so none made meanwhile is missed."""
        batch = store.latest_batch_id()
        if batch == self.batch_id:
            return
        rows = store.queue_rows(batch_id=batch)
        with self._lock:
            if self._assign is None:  # nobody asked for work yet: the first request reads the new batch
                self.batch_id = batch
                return
            self.assign.new_batch(rows, store.decisions_on([r["item_id"] for r in rows]), self.clock())
            self.batch_id = batch

    def _blind(self, actor: str, item_id: str) -> bool:
        """A stable share of items (per annotator) is shown without the suggestion, to measure anchoring."""
        share = self.config.blind_share
        if share <= 0:
            return False
        h = hashlib.sha1(f"{actor}\0{item_id}".encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(h[:8], "big") / 2 ** 64 < share

    def _item(self, actor: str, row: dict) -> dict:
        """An item as its annotator sees it: text, why it was chosen and the model's view (none of
        it when the item is blind for them, and never anyone else's label)."""
        probs = json.loads(row["probs"]) if row.get("probs") else {}
        meta = json.loads(row["metadata"]) if row.get("metadata") else {}
        hidden = bool(probs) and self._blind(actor, row["item_id"])
        return {"item_id": row["item_id"], "text": row["text"], "lease": self._lease_proof(actor, row["item_id"]),
                "metadata": meta if isinstance(meta, dict) else {"value": meta},
                "batch_id": row.get("batch_id"), "position": row.get("position"), "strategy": row.get("strategy"),
                "score": row.get("score"), "rank": row.get("rank"), "percentile": row.get("percentile"),
                "audit": bool(row.get("audit")), "model_version": row.get("model_version"),
                "probs": {} if hidden else probs, "suggestion_hidden": hidden,
                "multi_label": self.config.multi_label, "review_note": row.get("review_note")}

    def _lease_proof(self, actor: str, item_id: str) -> str:
        """Proof that this project's server handed ``item_id`` to ``actor``: a keyed hash whose key
        (cache/lease.key, readable by the owner only) survives a restart, unlike the leases."""
        msg = f"{actor}\0{item_id}".encode("utf-8", "surrogatepass")
        return hmac.new(self._lease_key, msg, hashlib.sha256).hexdigest()[:32]

    def _lease_proof_ok(self, actor: str, item_id: str, proof) -> bool:
        return isinstance(proof, str) and hmac.compare_digest(proof, self._lease_proof(actor, item_id))

    @property
    def _lease_key(self) -> bytes:
        if self._key is None:
            path = self.project.cache_dir / "lease.key"
            try:
                key = path.read_bytes()
            except FileNotFoundError:
                key = b""
            if len(key) != 32:
                key = os.urandom(32)
                path.parent.mkdir(exist_ok=True)
                atomic_write_bytes(path, key, mode=0o600)
            self._key = key
        return self._key

    def _suggested(self, actor: str, row: dict) -> list[str]:
        """The labels the annotator saw suggested ([] when none was shown)."""
        if not row.get("probs") or self._blind(actor, row["item_id"]):
            return []
        probs = json.loads(row["probs"])
        if self.config.multi_label:
            return sorted(k for k, p in probs.items() if p >= 0.5)
        return [max(probs, key=probs.get)] if probs else []

    def _session(self, actor: str, session: str | None) -> Session | None:
        s = self.sessions.get(session) if isinstance(session, str) else None
        if s is None and isinstance(session, str) and 8 <= len(session) <= 40:
            # a session of a server that restarted: carry on with it (its count is in the store)
            s = Session(session, actor, "reconnected", self.clock(), self._request_conn)
            s.decisions = self.store.session_decisions(session, actor)
            self.sessions[session] = s
        if s is not None and s.actor != actor:
            raise ApiError("bad_request", "that session belongs to someone else")
        if s is not None:
            s.last_seen = self.clock()
            if s.conn is None:
                s.conn = self._request_conn
        return s

    def _others(self, actor: str) -> int:
        now = self.clock()
        return len({s.actor for s in self.sessions.values()
                    if s.actor != actor and s.conn is not None and now - s.last_seen < SESSION_IDLE_SECONDS})

    # -- gold items: a share of every annotator's items, blind, never skipped -------------------------
    def _gold(self) -> dict:
        if self._gold_state is None:
            from labelloop.core.store import review
            done: dict[str, set] = {}
            for a, i in review.gold_done(self.store):
                done.setdefault(a, set()).add(i)
            self._gold_state = {"items": review.gold_items(self.store), "done": done, "hold": {}, "since": {}}
        return self._gold_state

    def _gold_for(self, actor: str) -> dict | None:
        """The gold item this actor holds, or one now due (every 1/gold_share items), or None."""
        share = self.config.gold_share
        if share <= 0:
            return None
        g = self._gold()
        if not g["items"]:
            return None
        held = g["hold"].get(actor)
        if held is not None:
            return held
        every = max(2, round(1 / share))
        if g["since"].get(actor, 0) < every - 1:
            return None
        done = g["done"].get(actor, set())
        fresh = [r for r in g["items"] if r["item_id"] not in done]
        if not fresh:
            return None
        pick = fresh[int(hashlib.sha1(f"{actor}\0{len(done)}".encode()).hexdigest(), 16) % len(fresh)]
        g["hold"][actor] = pick
        return pick

    def _gold_item(self, actor: str, row: dict) -> dict:
        """A gold item as the annotator sees it: like any item without a suggestion shown."""
        meta = json.loads(row["metadata"]) if row.get("metadata") else {}
        return {"item_id": row["item_id"], "text": row["text"], "lease": self._lease_proof(actor, row["item_id"]),
                "metadata": meta if isinstance(meta, dict) else {"value": meta}, "batch_id": None, "position": None,
                "strategy": "random", "score": None, "rank": None, "percentile": None, "audit": False,
                "model_version": None, "probs": {}, "suggestion_hidden": True, "multi_label": self.config.multi_label}

    def _paused(self, actor: str) -> bool:
        """[team] gold_pause: 10 or more gold answers and an accuracy below gold_min_accuracy."""
        if not self.config.gold_pause:
            return False
        g = self._gold()
        score = g.setdefault("score", {}).get(actor)
        if score is None:
            from labelloop.core.store import review
            n = k = 0
            for a, given, ref, _t in review.gold_answers(self.store, self.config.gold_tier_key):
                if a == actor:
                    n, k = n + 1, k + (given == ref)
            score = g["score"][actor] = (n, k)
        n, k = score
        return n >= 10 and k / n < self.config.gold_min_accuracy

    def _pause_text(self, actor: str) -> str | None:
        if not self._paused(actor):
            return None
        n, k = self._gold()["score"][actor]
        return (f"{actor} is paused: {k} of {n} check items right, below the project's "
                f"{self.config.gold_min_accuracy:.0%} ([team] gold_pause); talk to a reviewer.")

    def _serve(self, actor: str) -> dict | None:
        if self._paused(actor):
            return None   # (the answer's "paused" says why; a decision already made stays stored)
        front = self.assign.front.get(actor)
        gold = None if front else self._gold_for(actor)
        if gold is not None:
            return self._gold_item(actor, gold)
        slot = self.assign.next_for(actor, self.clock())
        if slot is None:
            self._maybe_refill()
            return None
        return self._item(actor, slot.row)

    def _state(self, actor: str, sess: Session | None) -> dict:
        job = self.job
        return {"left": self.assign.left_for(actor, self.clock()), "batch": self.batch_id,
                "paused": self._pause_text(actor) if self.config.gold_pause else None,
                "retraining": bool(job and job.running), "job": job.to_dict() if job else None,
                "others": self._others(actor), "done_session": sess.decisions if sess else 0,
                "summary": self._summary()}

    def _summary(self) -> str:
        """The labelling screen's summary line, recomputed when a new model version is stored."""
        from labelloop.core.measure import summary_line
        from labelloop.core.store.reports import latest_measurement
        v = self.batch_id
        cached = getattr(self, "_summary_cache", None)
        if cached is None or cached[0] != v:
            cached = (v, summary_line(latest_measurement(self.store)))
            self._summary_cache = cached
        return cached[1]

    def _maybe_refill(self) -> None:
        """Nothing left to hand out: queue a new batch if the pool still has items."""
        if self.job is not None and self.job.running:
            return
        if self.assign.open_count(self.clock()) == 0 and self.store.unlabelled_pool() > 0:
            self._start_job("the queue is empty", {})

    # -- ops -------------------------------------------------------------------------------
    def op_ping(self, actor: str) -> dict:
        return {"actor": actor}

    def op_open_session(self, actor: str, client: str = "cli", conn: object | None = None) -> dict:
        now = self.clock()
        for old in [k for k, o in self.sessions.items() if o.conn is None and now - o.last_seen > 3600]:
            del self.sessions[old]
        sid = uuid.uuid4().hex[:12]
        sess = Session(sid, actor, str(client)[:40], now, conn)
        self.sessions[sid] = sess
        cfg_path = self.dir / CONFIG_NAME
        return {"session": sid, "actor": actor, "roles": self.roles_of(actor),
                "config_toml": cfg_path.read_text(encoding="utf-8"), "config_path": str(cfg_path),
                "project_dir": str(self.dir), **self._state(actor, sess)}

    def op_close_session(self, actor: str, session: str | None = None) -> dict:
        s = self._session(actor, session)
        if s is not None:
            del self.sessions[s.id]
        return {}

    def op_next(self, actor: str, session: str | None = None) -> dict:
        sess = self._session(actor, session)
        paused = self._pause_text(actor)
        if paused:
            raise self._deny(actor, "denied", paused, "next")
        return {"item": self._serve(actor), **self._state(actor, sess)}

    def op_decide(self, actor: str, item_id: str, action: str, msg_id: str, labels: list | None = None,
                  reason: str | None = None, note: str | None = None, duration_ms: float | None = None,
                  session: str | None = None, lease: str | None = None) -> dict:
        sess = self._session(actor, session)
        if not isinstance(msg_id, str) or not 8 <= len(msg_id) <= 64:
            raise ApiError("bad_request", "every decision needs a client message id (msg_id, 8-64 characters)")
        done = self._msgs.get((actor, msg_id))
        if done is not None:  # a resend of a decision already stored: answer as before, store nothing
            return {"event_id": done, "duplicate": True, "item": self._serve(actor), **self._state(actor, sess)}
        if not isinstance(item_id, str):
            raise ApiError("bad_request", "item_id must be a string")
        if action not in ("label", "accept", "correct", "skip", "flag"):
            raise ApiError("bad_request", f"unknown action {str(action)[:20]!r} (label, accept, correct, skip, flag)")
        if note is not None and not isinstance(note, str) or reason is not None and not isinstance(reason, str):
            raise ApiError("bad_request", "reason and note must be strings")
        if duration_ms is not None and (isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float))):
            raise ApiError("bad_request", "duration_ms must be a number")
        gold = self._gold_state["hold"].get(actor) if self._gold_state else None
        if gold is not None and gold["item_id"] == item_id:
            return self._decide_gold(actor, sess, gold, action, labels, note, duration_ms, msg_id)
        slot = self.assign.slots.get(item_id)
        now = self.clock()
        if slot is not None and not self.assign.holds(actor, item_id) and self._lease_proof_ok(actor, item_id, lease) \
                and self.assign.may_take(slot, actor, now) and not any(e > now for e in slot.leases.values()):
            # the item was handed to this actor (the proof says so) by a server that has restarted since
            # (leases live in memory); nobody holds it now, so the resent decision stands
            slot.leases[actor] = now + self.assign.lease_seconds
        if slot is None or not self.assign.holds(actor, item_id):
            if slot is None and not self.store.item_exists(item_id):
                raise ApiError("unknown_item", f"there is no item {item_id[:60]!r} in this project")
            raise ApiError("not_leased", f"item {item_id[:60]!r} is not in your hands (ask for the next item); "
                           "nothing was stored")
        row = slot.row
        suggested = self._suggested(actor, row)
        fields: dict = {}
        kind = "label"
        if action in ("skip", "flag"):
            kind = action
        elif action == "accept":
            if not suggested:
                raise ApiError("bad_request", "there is no suggestion to accept for this item; press a label key")
            labels, fields["via"] = suggested, "accept"
        else:
            labels = self._check_labels(labels)
            if action == "correct" or (suggested and sorted(labels) != suggested):
                if reason is None and action == "label" and self.config.ask_reason:
                    raise ApiError("bad_request", "this project asks for a reason with every correction "
                                   "([labels] ask_reason)")
                reason = reason or UNSPECIFIED
                if reason not in self.config.taxonomy and reason != UNSPECIFIED:
                    raise ApiError("bad_request", f"'{reason[:60]}' is not in the project's error taxonomy")
                fields.update(via="correction", error_category=reason)
            else:
                fields["via"] = "key-agrees" if suggested else "key"
        probs = json.loads(row["probs"]) if row.get("probs") else None
        hidden = bool(probs) and self._blind(actor, item_id)
        event_id = self.store.append_event(
            item_id, kind, actor, labels=labels if kind == "label" else None, note=(note or None),
            duration_ms=float(duration_ms) if duration_ms is not None else None,
            model_version=row.get("model_version"), batch_id=row.get("batch_id"), strategy=row.get("strategy"),
            score=row.get("score"), rank=row.get("rank"), percentile=row.get("percentile"), audit=bool(row.get("audit")),
            suggestion="|".join(suggested) or None, shown_probs=probs if (probs and not hidden) else None,
            suggestion_hidden=hidden if probs else None, session_id=sess.id if sess else None,
            client_msg_id=msg_id, **fields)
        self._msgs[(actor, msg_id)] = event_id
        self.assign.record(actor, item_id, kind, "|".join(labels) if kind == "label" else None)
        if self._gold_state is not None:
            self._gold_state["since"][actor] = self._gold_state["since"].get(actor, 0) + 1
        if sess is not None:
            sess.decisions += 1
        if kind == "label":
            self.labels_since_train += 1
            every = self.config.retrain_every
            if every and self.labels_since_train >= every and not (self.job and self.job.running):
                # labels given while the previous retrain ran count toward the next one (at most one
                # retrain's worth, so a slow trainer does not retrain back to back forever)
                carry = min(self.labels_since_train - every, every - 1)
                self._start_job(f"auto-retrain after {every} labels", {})
                self.labels_since_train = carry
        return {"event_id": event_id, "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}

    def _decide_gold(self, actor, sess, gold, action, labels, note, duration_ms, msg_id) -> dict:
        if action in ("skip", "flag", "accept"):
            raise ApiError("bad_request", "this item cannot be skipped or flagged; label it as best you can")
        labels = self._check_labels(labels)
        event_id = self.store.append_event(
            gold["item_id"], "label", actor, labels=labels, via="key", note=(note or None), strategy="gold",
            duration_ms=float(duration_ms) if duration_ms is not None else None,
            session_id=sess.id if sess else None, client_msg_id=msg_id)
        self._msgs[(actor, msg_id)] = event_id
        g = self._gold()
        g["hold"].pop(actor, None)
        g["done"].setdefault(actor, set()).add(gold["item_id"])
        g["since"][actor] = 0
        g.get("score", {}).pop(actor, None)   # re-read on the next request
        if sess is not None:
            sess.decisions += 1
        return {"event_id": event_id, "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}

    def _check_labels(self, labels) -> list[str]:
        if not isinstance(labels, list) or not all(isinstance(l, str) for l in labels):
            raise ApiError("bad_request", "labels must be a list of label names")
        unknown = [l for l in labels if l not in self.config.labels]
        if unknown:
            raise ApiError("bad_request", f"unknown label(s) {', '.join(l[:40] for l in unknown)}")
        if not labels:
            raise ApiError("bad_request", "choose at least one label")
        if len(labels) > 1 and not self.config.multi_label:
            raise ApiError("bad_request", "this project takes one label per item")
        return sorted(set(labels))

    def op_undo(self, actor: str, msg_id: str, session: str | None = None) -> dict:
        """Take back this actor's latest decision still standing (any depth, across sessions). The
        undo is itself an event; the item comes back to this actor first."""
        sess = self._session(actor, session)
        if not isinstance(msg_id, str) or not 8 <= len(msg_id) <= 64:
            raise ApiError("bad_request", "an undo needs a client message id (msg_id, 8-64 characters)")
        if (actor, msg_id) in self._msgs:
            return {"undone": None, "duplicate": True, "item": self._serve(actor), **self._state(actor, sess)}
        last = self.store.latest_decision(actor)
        if last is None:
            return {"undone": None, "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}
        event_id = self.store.append_event(last["item_id"], "undo", actor, target_event=last["event_id"],
                                           session_id=sess.id if sess else None, client_msg_id=msg_id)
        self._msgs[(actor, msg_id)] = event_id
        g = self._gold()
        gold = next((r for r in g["items"] if r["item_id"] == last["item_id"]), None)
        if gold is not None:   # a gold item comes back to this annotator first
            g["done"].get(actor, set()).discard(gold["item_id"])
            g["hold"][actor] = gold
            if sess is not None:
                sess.decisions = max(0, sess.decisions - 1)
            return {"undone": last["item_id"], "duplicate": False, "item": self._gold_item(actor, gold),
                    **self._state(actor, sess)}
        rows = self.store.queue_rows(item_ids=[last["item_id"]]) if last["item_id"] not in self.assign.slots else []
        row = next((r for r in rows if r["batch_id"] == last["batch_id"]), rows[0] if rows else None)
        self.assign.unrecord(actor, last["item_id"], last["kind"], row, self.clock())
        if sess is not None:
            sess.decisions = max(0, sess.decisions - 1)
        if last["kind"] == "label":
            self.labels_since_train = max(0, self.labels_since_train - 1)
        return {"undone": last["item_id"], "duplicate": False, "item": self._serve(actor), **self._state(actor, sess)}

    def op_progress(self, actor: str, session: str | None = None) -> dict:
        sess = self._session(actor, session)
        st = self._state(actor, sess)
        per_hour = None
        if sess is not None:
            elapsed_h = (self.clock() - sess.started) / 3600
            per_hour = sess.decisions / elapsed_h if elapsed_h > 1 / 120 and sess.decisions else None
        return {**st, "per_hour": per_hour}

    op_poll = op_progress

    def op_guidelines(self, actor: str) -> dict:
        path = self.dir / self.config.guidelines
        try:
            return {"text": path.read_text(encoding="utf-8")}
        except (OSError, UnicodeDecodeError):
            return {"text": f"(no readable guidelines file at {path})"}

    def op_metrics(self, actor: str, arms: bool = False) -> dict:
        from labelloop.core.agreement import agreement_report
        from labelloop.core.metrics import metrics_snapshot
        from labelloop.core.store.reports import annotation_ratings
        reader = self._reader()
        snap = jsonable(metrics_snapshot(reader))
        ratings, audit = annotation_ratings(reader.store)
        snap["agreement"] = agreement_report(ratings, categories=self._scale(ratings), audit_items=audit)
        out = {"snapshot": snap, "arms": None, "arms_pending": False}
        if not arms:
            return out
        with self._lock:
            version = (snap.get("latest") or {}).get("version")
            cached = self._arms
            if cached is not None and cached["version"] == version:
                out["arms"] = cached["arms"]
            else:
                out["arms_pending"] = True
                if self._arms_thread is None or not self._arms_thread.is_alive():
                    self._arms_thread = threading.Thread(target=self._compute_arms, args=(version,), daemon=True,
                                                         name="labelloop-arms")
                    self._arms_thread.start()
        return out

    def _gold_accuracy(self, store) -> dict:
        """Accuracy on gold per annotator, with a Wilson 95 % interval, per class and per tier; who is
        below ``gold_min_accuracy``."""
        from labelloop.core.store import review
        per: dict = {}
        for actor, given, ref, tier in review.gold_answers(store, self.config.gold_tier_key):
            p = per.setdefault(actor, {"n": 0, "correct": 0, "per_class": {}, "per_tier": {}})
            ok = given == ref
            p["n"] += 1
            p["correct"] += ok
            for key, group in ((ref, "per_class"), (tier or "(none)", "per_tier")):
                c = p[group].setdefault(key, {"n": 0, "correct": 0})
                c["n"] += 1
                c["correct"] += ok
        for p in per.values():
            p["accuracy"], p["low"], p["high"] = _wilson(p["correct"], p["n"])
            for group in ("per_class", "per_tier"):
                for c in p[group].values():
                    c["accuracy"] = c["correct"] / c["n"]
            p["below_threshold"] = p["high"] < self.config.gold_min_accuracy or (
                p["n"] >= 10 and p["accuracy"] < self.config.gold_min_accuracy)
        return per

    def _scale(self, ratings: dict) -> list[str] | None:
        """The categories agreement is measured on: the project's labels (single-label), or the label
        sets that occur (multi-label: each set is one nominal category)."""
        return None if self.config.multi_label else list(self.config.labels)

    def _compute_arms(self, version) -> None:
        """Learning curves per arm train small models: off the request thread, on its own cursor."""
        from labelloop.core.metrics import arm_comparison
        project = Project(self.dir, self.config, Store(self.store.cursor(), self.store.path))
        try:
            arms = jsonable(arm_comparison(project))
        except Exception as exc:  # e.g. no labels yet: the rest of the pane still stands
            arms = {"error": str(exc)}
        finally:
            project.store.close()
        with self._lock:
            self._arms = {"version": version, "arms": arms}

    def op_check(self, actor: str) -> dict:
        """The readiness checklist, the five warning signs and every version's live measurement."""
        from labelloop.core.readiness import readiness
        reader = self._reader()
        r = readiness(reader)
        r["project"] = self.config.name
        r["labels"] = list(self.config.labels)
        r["cost"] = {"per_label": self.config.cost_per_label, "seconds_per_label": self.config.seconds_per_label,
                     "compute_price_per_hour": self.config.compute_price_per_hour}
        return jsonable(r)

    def op_status(self, actor: str) -> dict:
        from labelloop.core.agreement import agreement_report
        from labelloop.core.store.reports import annotation_ratings, project_status
        reader = self._reader()
        st = jsonable(project_status(reader))
        ratings, audit = annotation_ratings(reader.store)
        full = agreement_report(ratings, categories=self._scale(ratings), audit_items=audit, bootstrap=500)
        st["agreement"] = {k: full[k] for k in ("n_items_rated", "n_items_overlap", "annotators", "prevalence",
                                                "overall", "by_arm")}
        with self._lock:
            rq = self.op_review_queue(actor)
        st["review"] = {"waiting": len(rq["items"]), "by_reason": rq["counts"]}
        st["gold"] = self._gold_accuracy(reader.store)
        from labelloop.core.measure import warning_signs
        from labelloop.core.store.reports import measurements, metrics_rows
        batch = metrics_rows(reader.store)["batch"]
        signals = json.loads(batch[0]["signals"]) if batch and batch[0]["signals"] else {}
        st["warnings"] = jsonable(warning_signs(measurements(reader.store), agreement=full, signals=signals,
                                                batch_strategy=batch[0]["strategy"] if batch else None))
        with self._lock:
            st["team"] = self._team()
        return st

    def _team(self) -> dict:
        return {"working": sorted({s.actor for s in self.sessions.values() if s.conn is not None
                                   and self.clock() - s.last_seen < SESSION_IDLE_SECONDS}),
                "open_items": self.assign.open_count(self.clock()) if self._assign is not None else None,
                "retraining": bool(self.job and self.job.running)}

    def op_next_items(self, actor: str, n: int = 20, session: str | None = None) -> dict:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ApiError("bad_request", f"n must be a whole number of at least 1, got {n!r}")
        slots = self.assign.upcoming(actor, self.clock(), min(n, MAX_NEXT_ITEMS))
        return {"items": [self._item(actor, s.row) for s in slots]}

    # -- retraining ------------------------------------------------------------------------
    def op_retrain_start(self, actor: str, why: str = "asked for", strategy: str | None = None,
                         batch: int | None = None, seed: int | None = None) -> dict:
        kw = {k: v for k, v in (("strategy", strategy), ("batch_size", batch), ("seed", seed)) if v is not None}
        if kw and not self.allowed(actor, "retrain_options"):
            raise self._deny(actor, "denied", f"{actor} may retrain but not choose the strategy, batch or seed "
                             "(admins only)", "retrain_start")
        if self.job is not None and self.job.running:
            return {"job": self.job.to_dict(), "started": False}
        return {"job": self._start_job(str(why)[:80], kw).to_dict(), "started": True}

    def op_retrain_poll(self, actor: str, job: int | None = None) -> dict:
        j = self.job
        if j is None or (job is not None and j.id != job):
            raise ApiError("bad_request", f"no retrain job {job}")
        return {"job": j.to_dict(), "batch": self.batch_id}

    def _start_job(self, why: str, kw: dict) -> Job:
        self._job_ids += 1
        job = Job(self._job_ids, why, kw)
        self.job = job
        self.labels_since_train = 0
        executor = self._training_process() if self.compute == "process" else None
        job.thread = threading.Thread(target=self._run_job, args=(job, executor), daemon=True,
                                      name=f"labelloop-retrain-{job.id}")
        job.thread.start()
        return job

    def _run_job(self, job: Job, executor) -> None:
        from labelloop.core.loop import train_and_queue
        project = Project(self.dir, self.config, Store(self.store.cursor(), self.store.path))

        def progress(fraction: float, step: str) -> None:
            if job.cancel:
                raise _Cancelled()
            job.fraction, job.step = fraction, step

        try:
            if executor is None:
                report = train_and_queue(project, progress=progress, **job.kw)
            else:
                report = _retrain_in_process(executor, project, progress, job.kw)
            if job.cancel:
                raise _Cancelled()
            self._new_batch(project.store)
            with self._lock:
                job.report = report_dict(report)
                job.fraction, job.step = 1.0, "done"
        except _Cancelled:
            job.error = "cancelled"
        except Exception as exc:
            from concurrent.futures.process import BrokenProcessPool
            store_failure = as_store_error(exc)
            with self._lock:
                if store_failure is not None:
                    self.store_failure = store_failure
                    job.error = str(store_failure)
                elif isinstance(exc, BrokenProcessPool):  # the training process died (e.g. out of memory)
                    self._executor = None
                    job.error = "the training process stopped unexpectedly; retrain again to try once more"
                else:
                    job.error = str(exc) if isinstance(exc, LabelloopError) else f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
            project.store.close()  # this job's cursor (one per job: never left open)

    def wait_job(self, timeout: float = 600) -> Job | None:
        """Block until the running retrain (if any) has finished (scripts and tests)."""
        job = self.job
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return job

    # -- files -----------------------------------------------------------------------------
    def op_export(self, actor: str, path: str, what: str = "final") -> dict:
        from labelloop.core.store.exports import export_parquet
        if not isinstance(path, str):
            raise ApiError("bad_request", "path must be a string")
        return jsonable(asdict(export_parquet(self.project, path, what=what)))

    def op_import(self, actor: str, path: str, text_col: str = "text", id_col: str | None = None,
                  label_col: str | None = None, split_col: str | None = None, meta_cols: list | None = None,
                  skip_invalid: bool = False, label_sep: str = "|", dedupe: bool = False,
                  rejects: str | None = None, source_name: str | None = None) -> dict:
        from labelloop.core.store.imports import import_file
        if not isinstance(path, str):
            raise ApiError("bad_request", "path must be a string")
        try:
            r = import_file(self.project, path, text_col=text_col, id_col=id_col, label_col=label_col,
                            split_col=split_col, meta_cols=meta_cols, skip_invalid=skip_invalid, label_sep=label_sep,
                            dedupe=dedupe, rejects_path=rejects, actor=actor, source_name=source_name)
        except LabelloopError as exc:
            if source_name and path in str(exc) and as_store_error(exc) is None:
                # the server imports a private copy: the message names the user's file
                raise ApiError("bad_request", str(exc).replace(path, source_name)) from None
            raise
        self._msg_ids = None  # re-read on next use
        return {**jsonable(asdict(r)), "duplicate_lines": r.duplicate_lines()}

    def op_model_export(self, actor: str, path: str, version: int | None = None) -> dict:
        from labelloop.core.transfer import export_model
        if not isinstance(path, str):
            raise ApiError("bad_request", "path must be a string")
        out, v = export_model(self.project, path, version)
        return {"path": str(out), "version": v}

    def op_model_import(self, actor: str, path: str, trust: bool = False, source_name: str | None = None) -> dict:
        from labelloop.core.transfer import import_model
        if not isinstance(path, str):
            raise ApiError("bad_request", "path must be a string")
        if trust and self._request_conn is not None and not isinstance(self._request_conn, _InProcess):
            raise ApiError("denied", "--trust loads a pickle, which can run code: not through the server. Stop "
                           "the server and run labelloop model import --trust as the project's owner.")
        return {"version": import_model(self.project, path, trust=trust)}

    # -- review (issue: agreement and review) ------------------------------------------------------
    def _review_reasons(self, c: dict) -> list[str]:
        """Why an item needs a reviewer (empty: it does not): annotators disagree once everyone it needs
        has labelled (with the tie-breaker too, when configured), they agree against a confident model,
        or someone flagged it."""
        reasons = []
        labels = c["labels"]
        if len(labels) >= 2:
            probe = Slot(c["item_id"], {}, self.assign.need(c["item_id"]))
            probe.labelled = dict(zip(c["actors"], labels))
            self.assign.adjust_need(probe)
            distinct = set(labels)
            if len(distinct) > 1 and len(labels) >= probe.need:
                reasons.append("disagreement")
            elif len(distinct) == 1:
                probs = json.loads(c["probs"]) if c.get("probs") else {}
                top = max(probs, key=probs.get) if probs else None
                if top is not None and not self.config.multi_label and top != labels[0] \
                        and probs[top] >= self.config.dissent_threshold:
                    reasons.append(f"model dissent ({top} {probs[top]:.2f})")
                elif self.config.review_unanimous:
                    reasons.append("unanimous (review_unanimous = true)")
        if c["n_flags"]:
            reasons.append("flagged")
        return reasons

    def op_review_queue(self, actor: str, include_decided: bool = False) -> dict:
        """Items waiting for a reviewer, with why, and the counts by reason."""
        from labelloop.core.store import review
        items, counts = [], {}
        for c in review.candidates(self.store):
            reasons = self._review_reasons(c)
            if not reasons or (c["adjudicated"] and not include_decided):
                continue
            for r in reasons:
                key = r.split(" (")[0]
                counts[key] = counts.get(key, 0) + 1
            items.append({"item_id": c["item_id"], "reasons": reasons, "annotators": c["actors"],
                          "labels": c["labels"], "n_flags": c["n_flags"], "audit": bool(c["audit"]),
                          "adjudicated": bool(c["adjudicated"])})
        return {"items": items, "counts": counts}

    def op_review_item(self, actor: str, item_id: str) -> dict:
        from labelloop.core.store import review
        if not isinstance(item_id, str):
            raise ApiError("bad_request", "item_id must be a string")
        v = review.versions(self.store, item_id)
        if v is None:
            raise ApiError("unknown_item", f"there is no item {item_id[:60]!r} in this project")
        return jsonable(v)

    def op_adjudicate(self, actor: str, item_id: str, labels: list, msg_id: str, rationale: str | None = None) -> dict:
        """The reviewer's decision: the final labels of the item and why (an ``adjudicate`` event)."""
        if not isinstance(msg_id, str) or not 8 <= len(msg_id) <= 64:
            raise ApiError("bad_request", "an adjudication needs a client message id (msg_id, 8-64 characters)")
        done = self._msgs.get((actor, msg_id))
        if done is not None:
            return {"event_id": done, "duplicate": True}
        if not isinstance(item_id, str) or not self.store.item_exists(item_id):
            raise ApiError("unknown_item", f"there is no item {str(item_id)[:60]!r} in this project")
        if rationale is not None and not isinstance(rationale, str):
            raise ApiError("bad_request", "rationale must be a string")
        labels = self._check_labels(labels)
        event_id = self.store.append_event(item_id, "adjudicate", actor, via="review", labels=labels,
                                           note=rationale or None, client_msg_id=msg_id)
        self._msgs[(actor, msg_id)] = event_id
        return {"event_id": event_id, "duplicate": False}

    def op_undo_adjudication(self, actor: str, msg_id: str) -> dict:
        """Take back this reviewer's latest adjudication still standing (any depth); the item returns
        to the review queue."""
        from labelloop.core.store import review
        if not isinstance(msg_id, str) or not 8 <= len(msg_id) <= 64:
            raise ApiError("bad_request", "an undo needs a client message id (msg_id, 8-64 characters)")
        if (actor, msg_id) in self._msgs:
            return {"undone": None, "duplicate": True}
        last = review.latest_adjudication(self.store, actor)
        if last is None:
            return {"undone": None, "duplicate": False}
        event_id = self.store.append_event(last["item_id"], "undo", actor, target_event=last["event_id"],
                                           client_msg_id=msg_id)
        self._msgs[(actor, msg_id)] = event_id
        return {"undone": last["item_id"], "duplicate": False}

    def op_send_back(self, actor: str, item_id: str, reason: str, msg_id: str) -> dict:
        """The reviewer returns an item to its annotators with a reason: their labels are taken back
        (undo events by the reviewer, the reason in each) and the item is served again first, the
        reason shown with it."""
        from labelloop.core.store import review
        if not isinstance(msg_id, str) or not 8 <= len(msg_id) <= 64:
            raise ApiError("bad_request", "sending back needs a client message id (msg_id, 8-64 characters)")
        if (actor, msg_id) in self._msgs:
            return {"item_id": item_id, "duplicate": True}
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError("bad_request", "say why the item goes back (the annotators will see it)")
        if not isinstance(item_id, str) or not self.store.item_exists(item_id):
            raise ApiError("unknown_item", f"there is no item {str(item_id)[:60]!r} in this project")
        standing = review.standing_labels(self.store, item_id)
        if not standing:
            raise ApiError("bad_request", "nobody's label stands on this item; there is nothing to send back")
        note = f"sent back: {reason.strip()}"[:500]
        first = None
        with self.store.transaction():
            for k, (event_id, _who, _kind) in enumerate(standing):
                eid = self.store.append_event(item_id, "undo", actor, target_event=event_id, note=note,
                                              client_msg_id=msg_id if k == 0 else None)
                first = first or eid
        self._msgs[(actor, msg_id)] = first
        rows = self.store.queue_rows(item_ids=[item_id])
        slot = self.assign.slots.get(item_id)
        if slot is None and rows:
            slot = Slot(item_id, rows[0], self.assign.need(item_id))
        if slot is not None:
            for _e, who, kind in standing:
                slot.labelled.pop(who, None) if kind == "label" else slot.passed.pop(who, None)
            slot.row = {**slot.row, "review_note": reason.strip()[:300]}
            self.assign.adjust_need(slot)
            self.assign.slots = {item_id: slot, **{k: v for k, v in self.assign.slots.items() if k != item_id}}
        return {"item_id": item_id, "duplicate": False, "undone": len(standing)}


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """A proportion and its Wilson score interval (sound for small n and for 0 or n successes)."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)
