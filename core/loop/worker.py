"""The training process a service or the workstation starts: quiet, low priority, one BLAS thread,
and gone when its parent is. Imports nothing heavy itself (the parent imports this module to start
the process; scikit-learn loads in the child, in ``warm_up``)."""

from __future__ import annotations

import os
import threading
import time


def worker_quiet(parent_pid: int | None = None) -> None:
    """Initializer of the training process a terminal program starts: its stdout and stderr go to
    /dev/null (nothing it prints can land on the annotator's screen), it runs at a lower priority and
    with one BLAS thread, so that on a small machine the process drawing the screen keeps a core."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # threadpoolctl comes with scikit-learn; without it the defaults stand
        pass
    _die_with_parent(parent_pid)


PARENT_WATCH_SECONDS = 0.5


def _die_with_parent(parent: int | None) -> None:
    """The training process ends when the process that started it ends, however it ends (kill -9
    included): a daemon thread watches the parent's pid and exits this process when it changes (the
    orphan is adopted by init or a subreaper). prctl(PR_SET_PDEATHSIG) would follow the parent
    *thread* that spawned the worker, which may end long before the server."""
    parent = parent or os.getppid()  # given by the parent: it may have died before this runs

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="labelloop-parent-watch").start()


def warm_up() -> bool:
    """Run in a fresh worker process so its imports (numpy, scikit-learn) are done before a retrain."""
    import labelloop.core.loop.al_round  # noqa: F401  (the import is the point)

    return True
