"""The workstation's line to the project API: no call to the server ever runs on the UI thread.

In-process (no network), a call runs at once and its answer is handled at once. Over the socket of
``labelloop serve`` the calls go, in the order they were made, to one background thread; their answers
come back to the UI thread through ``App.call_from_thread``. While the server cannot be reached the
thread tries again every second and the screen says "reconnecting… (N s)"; a decision made meanwhile
is held, with its client message id fixed when the key was pressed, and sent once the server answers,
so it is stored exactly once (the server recognises a resend by that id).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from labelloop.core.api.protocol import ServerGone

RETRY_SECONDS = 1.0


@dataclass
class Call:
    fn: Callable[[], Any]
    done: Callable[[Any], None] | None
    failed: Callable[[BaseException], None] | None
    decision: bool  # held while the server is away (counted on screen); otherwise dropped then
    what: str


class Link:
    """``submit(fn, done, failed)``: run ``fn`` (a Workspace call) off the UI thread when it may touch
    the network, then ``done(result)`` or ``failed(exc)`` on the UI thread."""

    def __init__(self, app, threaded: bool):
        self.app = app
        self.threaded = threaded
        self.down_since: float | None = None  # when the server stopped answering (None: it answers)
        self._pending: list[Call] = []  # submitted, not yet answered (the UI thread reads its length)
        self._queue: queue.Queue[Call | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="labelloop-link", daemon=True)
            self._thread.start()

    # -- what the UI reads -------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._pending)

    @property
    def held(self) -> int:
        """Decisions made and not yet acknowledged by the server."""
        return sum(1 for c in self._pending if c.decision)

    def down_for(self) -> float | None:
        since = self.down_since
        return None if since is None else time.monotonic() - since

    # -- calls -------------------------------------------------------------------------------------
    def submit(
        self,
        fn: Callable[[], Any],
        done: Callable[[Any], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
        *,
        decision: bool = False,
        what: str = "",
    ) -> None:
        call = Call(fn, done, failed, decision, what)
        if not self.threaded:
            self._finish(call, *self._attempt(call))
            return
        self._pending.append(call)
        self._queue.put(call)

    def close(self, wait: float = 0.0) -> int:
        """Stop the thread (after ``wait`` seconds at most for what is still held); how many
        decisions were never acknowledged."""
        if self._thread is None:
            return 0
        deadline = time.monotonic() + wait
        while self.held and time.monotonic() < deadline and self.down_since is None:
            time.sleep(0.02)
        held = self.held
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=2)
        return held

    def _attempt(self, call: Call) -> tuple[bool, Any]:
        try:
            return True, call.fn()
        except BaseException as exc:  # handed to the UI thread, which knows what each one means
            return False, exc

    def _finish(self, call: Call, ok: bool, value: Any) -> None:
        if ok:
            if call.done is not None:
                call.done(value)
        elif call.failed is not None:
            call.failed(value)
        else:
            raise value

    def _run(self) -> None:
        while not self._stop.is_set():
            call = self._queue.get()
            if call is None:
                return
            while True:
                ok, value = self._attempt(call)
                if ok or not isinstance(value, ServerGone):
                    self.down_since = None
                    break
                # the server is away: a decision waits for it (its message id makes the resend safe);
                # anything else (a poll, a refresh) is dropped and asked again by the UI later
                if self.down_since is None:
                    self.down_since = time.monotonic()
                if not call.decision or self._stop.wait(RETRY_SECONDS):
                    break
            if self._stop.is_set():
                return
            if not ok and isinstance(value, ServerGone) and not call.decision and call.failed is None:
                self._pending.remove(call)  # a poll: the next one asks again
                continue
            self._deliver(call, ok, value)

    def _deliver(self, call: Call, ok: bool, value: Any) -> None:
        def finish() -> None:
            if call in self._pending:
                self._pending.remove(call)
            self._finish(call, ok, value)

        try:
            self.app.call_from_thread(finish)
        except RuntimeError:  # the app has stopped: nobody is left to show the answer
            pass


def link_line(link: Link):
    """The reconnecting line (a rich Text), or None while the server answers."""
    from rich.text import Text

    down = link.down_for()
    if down is None or down < 0.5:
        return None
    held = link.held
    text = f"reconnecting… ({down:.0f} s): the labelloop server is not answering"
    if held:
        text += f" · {held} decision{'s' if held != 1 else ''} held, sent once it answers"
    return Text(text, style="bold")
