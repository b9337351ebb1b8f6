"""The retrain job of the service: one at a time, in a child process (or a thread), beside the requests.

A round is planned here (reads the store), computed in the training process (features, model,
scores; no store), and committed here (a new model version and batch), then the service serves the
new batch. The training process is spawned once and kept; it warms its imports up in the background.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from labelloop.core.store import Store, as_store_error
from labelloop.core.store.project import Project
from labelloop.core.util.errors import LabelloopError


def training_executor():
    """One spawned worker process for training and scoring (its imports warm up in the background).
    Its stderr is /dev/null: under the workstation the terminal must not receive its output, and
    Textual's print capture has no file descriptor to hand on."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    from labelloop.core.loop.worker import warm_up, worker_quiet

    captured = sys.stderr
    with open(os.devnull, "w") as devnull:
        try:
            sys.stderr = devnull
            executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=worker_quiet,
                initargs=(os.getpid(),),
            )
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


def retrain_in_process(executor, project: Project, progress, kw: dict):
    """plan (here) -> compute (in the executor's process) -> commit (here). A feature cache the worker
    cannot read is rebuilt here once and the round retried."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from labelloop.core.loop.batch import blind_round

    progress(0.05, "reading the store")
    report = blind_round(project, **kw)  # a cold start chosen without features: milliseconds, done here
    if report is not None:
        return report
    # (imported only now: scikit-learn takes a second to load, which a fresh project's first batch
    # above does not wait for)
    from labelloop.core.engine.features import FeatureCacheError, invalidate_feature_cache
    from labelloop.core.loop.al_round import commit_round, compute_round, plan_round

    for attempt in range(2):
        progress(0.05, "reading the store")
        inp = plan_round(project, keep_features=False, **kw)
        future = executor.submit(compute_round, inp)
        progress(0.2, "building features in a separate process" if inp.build else "training in a separate process")
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
    return {
        "model_version": r.model_version,
        "batch_id": r.batch_id,
        "batch_size": r.batch_size,
        "strategy": r.strategy,
        "n_train": r.n_train,
        "metrics": r.metrics,
        "adequacy": r.adequacy,
        "signals": r.signals,
        "warnings": r.warnings,
        "notes": r.notes,
        "seconds": r.seconds,
    }


class _Cancelled(Exception):
    pass


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
        return {
            "id": self.id,
            "why": self.why,
            "running": self.running,
            "fraction": self.fraction,
            "step": self.step,
            "report": self.report,
            "error": self.error,
            "seconds": round((self.finished or time.time()) - self.started, 2),
        }


class Retrainer:
    """The service's retrain job and its training process. ``service`` is asked for its lock, its
    store, how to serve a new batch and how to classify a failure."""

    def __init__(self, service, compute: str):
        self.service = service
        self.compute = compute
        self.job: Job | None = None
        self._ids = 0
        self.executor = None
        self._remove_snapshots()

    def _remove_snapshots(self) -> None:
        """Items snapshots a stopped training process left (core/loop/featurejob.py): this service is the
        project's only one (its lease), so none is still in use."""
        from labelloop.core.loop.featurejob import SNAPSHOT_PREFIX

        try:
            for path in Path(self.service.dir, "cache").glob(SNAPSHOT_PREFIX + "*.parquet"):
                path.unlink(missing_ok=True)
        except OSError:
            pass

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def warm_up(self) -> None:
        """Start the training process now (its imports take a second or two of CPU), without holding
        up requests meanwhile."""
        if self.compute != "process" or self.executor is not None:
            return
        executor = training_executor()
        with self.service.lock:
            if self.executor is None:
                self.executor, executor = executor, None
        if executor is not None:  # a retrain started one meanwhile
            stop_executor(executor)

    def start(self, why: str, kw: dict) -> Job:
        self._ids += 1
        job = Job(self._ids, why, kw)
        self.job = job
        if self.compute == "process" and self.executor is None:
            self.executor = training_executor()
        executor = self.executor if self.compute == "process" else None
        job.thread = threading.Thread(
            target=self._run, args=(job, executor), daemon=True, name=f"labelloop-retrain-{job.id}"
        )
        job.thread.start()
        return job

    def _run(self, job: Job, executor) -> None:
        svc = self.service
        project = Project(svc.dir, svc.config, Store(svc.store.cursor(), svc.store.path))

        def progress(fraction: float, step: str) -> None:
            if job.cancel:
                raise _Cancelled()
            job.fraction, job.step = fraction, step

        prepare = False
        try:
            if executor is None:
                from labelloop.core.loop.al_round import train_and_queue

                report = train_and_queue(project, progress=progress, **job.kw)
            else:
                report = retrain_in_process(executor, project, progress, job.kw)
            if job.cancel:
                raise _Cancelled()
            svc.queue.new_batch(project.store)
            with svc.lock:
                job.report = report_dict(report)
                job.fraction, job.step = 1.0, "done"
            prepare = executor is not None and report.model_version is None
        except _Cancelled:
            job.error = "cancelled"
        except Exception as exc:
            from concurrent.futures.process import BrokenProcessPool

            store_failure = as_store_error(exc)
            with svc.lock:
                if store_failure is not None:
                    svc.store_failure = store_failure
                    job.error = str(store_failure)
                elif isinstance(exc, BrokenProcessPool):  # the training process died (e.g. out of memory)
                    self.executor = None
                    job.error = "the training process stopped unexpectedly; retrain again to try once more"
                else:
                    job.error = str(exc) if isinstance(exc, LabelloopError) else f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.time()
            if prepare:  # after the job has ended: the batch is served while the features are built
                self._prepare_features(project, executor)
            project.store.close()  # this job's cursor (one per job: never left open)

    def _prepare_features(self, project: Project, executor) -> None:
        """After a batch chosen without features (a fresh project's first): have the training process
        build them now, while the annotators label, so that the first retrain does not wait for them.
        Only a head start: when it fails, the first retrain builds them."""
        from labelloop.core.loop.featurejob import plan_features, prepare_features

        cfg = project.config
        try:
            _fp, build = plan_features(
                project.store, project.cache_dir, hashing_above=cfg.hashing_above, embeddings=cfg.features != "tfidf"
            )
            if build is not None:
                executor.submit(prepare_features, build)
        except Exception:
            pass

    def wait(self, timeout: float = 600) -> Job | None:
        """Block until the running retrain (if any) has finished (scripts and tests)."""
        job = self.job
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return job

    def close(self) -> None:
        """Cancel a running retrain, stop the training process, wait for the job's thread."""
        with self.service.lock:
            job = self.job
            if job is not None and job.running:
                job.cancel = True
            executor, self.executor = self.executor, None
        if executor is not None:
            stop_executor(executor)
        if job is not None and job.thread is not None:
            job.thread.join(timeout=30)
