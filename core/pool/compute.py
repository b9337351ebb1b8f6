"""Where the pool's heavy work runs: in this process (the default) or on a Dask cluster
(``[compute] cluster``). ``dask`` and ``distributed`` are imported only when a cluster is asked for.

Both executors offer the same three calls, so the scoring code (core/pool/scoring.py) is written
once: ``keep`` runs a task per partition and leaves each result where it was computed (a handle),
``on`` runs a function on each kept result where it lives and gathers the (small) answers, ``run``
runs tasks and gathers their answers. On a cluster a worker that dies takes its kept results with
it; Dask recomputes them from the task that made them (the tasks are pure functions of their
arguments and the files), so the answer is the same.
"""

from __future__ import annotations

from labelloop.core.config import CLUSTER_LOCAL_RE, check_cluster_setting
from labelloop.core.util.errors import LabelloopError

CONNECT_TIMEOUT = 10  # seconds to wait for a scheduler before saying it does not answer


class ClusterError(LabelloopError):
    """The configured cluster cannot be started or reached (one sentence; CLI exit code 2)."""


class InProcess:
    """Every task in this process, one after another: today's path, nothing to start."""

    name = "in-process"
    workers = 1

    def describe(self) -> str:
        return "in this process"

    def keep(self, fn, specs: list, *shared) -> list:
        return [fn(s, *shared) for s in specs]

    def on(self, fn, handles: list, *args) -> list:
        return [fn(h, *args) for h in handles]

    def run(self, fn, specs: list, *shared) -> list:
        return [fn(s, *shared) for s in specs]

    def share(self, obj):
        return obj

    def forget(self, handles: list) -> None:
        handles.clear()

    def close(self) -> None:
        pass


class DaskCluster:
    """A ``distributed`` client on a ``LocalCluster`` of N worker processes (``local:N``) or on a running
    scheduler (``tcp://HOST:PORT``). Tasks are retried when a worker dies (``retries``)."""

    RETRIES = 3

    def __init__(self, setting: str, *, memory_limit: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ClusterError(
                f"[compute] cluster = {setting!r} needs Dask: pip install 'labelloop[cluster]' (dask, distributed)."
            ) from None
        self.setting = setting
        self._cluster = None
        m = CLUSTER_LOCAL_RE.match(setting)
        try:
            if m:
                self._cluster = LocalCluster(
                    n_workers=int(m.group(1)),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # no fixed port to collide with another project's
                    memory_limit=memory_limit or "auto",
                    silence_logs=40,
                )
                self.client = Client(self._cluster, timeout=f"{CONNECT_TIMEOUT}s")
            else:
                self.client = Client(setting, timeout=f"{CONNECT_TIMEOUT}s")
        except (OSError, TimeoutError) as e:
            self.close()
            raise ClusterError(
                f"the Dask scheduler at {setting} did not answer within {CONNECT_TIMEOUT} s "
                f"({type(e).__name__}); start it, or unset [compute] cluster to work in this process."
            ) from None
        self.name = "local" if m else "scheduler"

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def describe(self) -> str:
        where = (
            f"a local Dask cluster ({self.setting})"
            if self.name == "local"
            else f"the Dask scheduler at {self.setting}"
        )
        return f"{where}, {self.workers} worker(s) answering"

    def keep(self, fn, specs: list, *shared) -> list:
        return self.client.map(fn, specs, *[[s] * len(specs) for s in shared], retries=self.RETRIES, pure=False)

    def on(self, fn, handles: list, *args) -> list:
        futs = [self.client.submit(fn, h, *args, retries=self.RETRIES, pure=False) for h in handles]
        return self.client.gather(futs)

    def run(self, fn, specs: list, *shared) -> list:
        return self.client.gather(self.keep(fn, specs, *shared))

    def share(self, obj):
        """``obj`` sent once to every worker (the model's and the featurizer's arrays)."""
        return self.client.scatter(obj, broadcast=True, hash=False)

    def forget(self, handles: list) -> None:
        for h in handles:
            if hasattr(h, "release"):
                h.release()
        handles.clear()

    def close(self) -> None:
        for thing in (getattr(self, "client", None), self._cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing after a failure: nothing more to tell
                    pass


def open_compute(setting: str):
    """The executor for ``[compute] cluster``: InProcess when unset."""
    check_cluster_setting(setting)
    return InProcess() if not setting else DaskCluster(setting)
