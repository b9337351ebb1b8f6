"""The annotator's workstation: a Textual app over a Workspace.

A client only: it talks to the project API through ``core.workspace.Workspace`` (in-process, or
the socket of ``labelloop serve``) and never to DuckDB, scikit-learn or files directly. Retrains are
jobs of the service (training in a separate process); the app polls their progress, so labelling
goes on while the model trains.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.widgets import Footer, Header, ProgressBar, Static

from labelloop.core.api.protocol import ApiError
from labelloop.core.api.workspace import QueueItem, Report, Workspace, new_msg_id
from labelloop.core.util.errors import LabelloopError, StoreError
from labelloop.tui import panes
from labelloop.tui.link import Link, link_line
from labelloop.tui.safe_text import safe_line, safe_text
from labelloop.tui.screens import CorrectionScreen, FatalScreen, HelpScreen, MetricsScreen, NoteScreen

EXIT_STORE_FAILED = 3


class LabelApp(App):
    """``labelloop label DIR``."""

    CSS_PATH = "app.tcss"
    TITLE = "labelloop"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("enter", "accept", "Accept", id="accept"),
        Binding("x", "correction", "Correct", id="correction"),
        Binding("s", "skip", "Skip", id="skip"),
        Binding("f", "flag", "Flag", id="flag"),
        Binding("u,backspace", "undo", "Undo", id="undo"),
        Binding("t", "retrain", "Retrain", id="retrain", show=False),
        Binding("m", "metrics", "Metrics", id="metrics"),
        Binding("question_mark,f1", "help", "Help", id="help", key_display="?"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    retraining: reactive[bool] = reactive(False)

    def __init__(
        self,
        project_dir: Path | str,
        *,
        actor: str | None = None,
        workspace: Workspace | None = None,
        retrain_in_process: bool = True,
    ):
        super().__init__()
        # In-process, retrains train and score in a child process (one, reused), so they never hold the
        # interpreter lock the UI thread needs; retrain_in_process=False runs them in a thread instead.
        self._own_ws = workspace is None
        self.ws = workspace or Workspace(
            project_dir, actor=actor, compute="process" if retrain_in_process else "thread"
        )
        self.retrain_in_process = retrain_in_process
        self._seen_batch = self.ws.batch

        cfg = self.ws.config
        self.key_to_label = {self._key_name(k): lab for lab, k in cfg.label_keys.items()}
        self.toggled: list[str] = []
        self.shown_at = time.perf_counter()
        self.latencies_ms: list[float] = []  # key handler -> next item rendered (read by bench/)
        self.last_report: Report | None = None
        self.store_failed: StoreError | None = None
        # over the socket, every call to the server runs on the link's thread, never on this one
        self.link = Link(self, threaded=self.ws.transport == "socket")
        if self.link.threaded:
            self.ws.retry_seconds(0)  # the link retries, and says so on screen
        self.unsent = 0  # decisions held when the app closed (never acknowledged by the server)
        self._notices: list[tuple[str, str, float]] = []  # (text, severity, shown until)
        self.notice_log: list[str] = []  # every notice shown (tests and benchmarks read it)
        self._quit_warned = False
        self.sub_title = f"{safe_line(cfg.name, 40)} · {safe_line(self.ws.actor, 24)}"

    def toast(self, message: str, *, severity: str = "information", timeout: float = 3.0) -> None:
        """A notice in the notice line, a line of its own above the label bar: it never covers the item
        text or the label bar. Several at once show as one: the newest, with how many more. Its text is
        shown as text: ids, labels and errors from data are never parsed as markup (an id like
        reddit[/r/python]1 used to crash the app) and their control characters are made visible."""
        line = safe_line(message, None)
        self.notice_log.append(line)
        self._notices = [n for n in self._notices if n[2] > time.monotonic()]
        self._notices.append((line, severity, time.monotonic() + timeout))
        self._show_notice()

    @staticmethod
    def _key_name(key: str) -> str:
        return {"?": "question_mark", " ": "space"}.get(key, key)

    # -- layout --------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with VerticalScroll(id="text-scroll"):
                    yield Static("", id="item-text", markup=False)
                yield Static("", id="meta", markup=False)
            with Vertical(id="right"):
                yield Static("", id="suggestion", markup=False)
                yield Static("", id="why", markup=False)
        yield Static("", id="notice", markup=False)
        yield Static("", id="labelbar", markup=False)
        yield Static("", id="summary", markup=False)
        with Horizontal(id="status"):
            yield Static("", id="progress", markup=False)
            yield ProgressBar(total=1.0, show_eta=False, id="retrain-bar")
        yield Footer()

    def on_mount(self) -> None:
        # Keys remapped in labelloop.toml [keys] override the defaults by binding id.
        from labelloop.core.config import DEFAULT_ACTION_KEYS

        self.set_keymap(
            {
                action: self._key_name(key)
                for action, key in self.ws.config.action_keys.items()
                if key != DEFAULT_ACTION_KEYS[action]
            }
        )
        self._q("#retrain-bar").display = False
        self.show_item()
        # Everything built so far (Textual, the store, numpy, ...) lives as long as the app: taking it out
        # of the cyclic collector's view keeps a full collection short. Measured on a 1M-item project:
        # full collections paused the UI thread 70-80 ms, the largest frame gaps while retraining.
        self.call_after_refresh(gc.freeze)
        # what the service says (a retrain's progress, a new batch, others working) is polled
        self.set_interval(0.25, self._poll)
        if self.ws.current() is None and not self.ws.retraining:
            self.start_retrain("the queue is empty")
        elif self.ws.retraining:
            self._retrain_started()
        elif self.ws.transport == "in-process" and self.ws.config.retrain_every:
            # start the training process once the first item is on screen (its imports take a second
            # or two of CPU that start-up should not wait for), so the first retrain finds it ready
            self.set_timer(1.5, self._warm_up)

    # -- rendering --------------------------------------------------------------
    def show_item(self, started: float | None = None) -> None:
        item = self.ws.current()
        self.toggled = []
        text_w = self._q("#item-text", Static)
        if item is None:
            text_w.update(Text(self._waiting_text(), style="italic"))
            self._q("#meta", Static).update("")
            self._q("#suggestion", Static).update("")
            self._q("#why", Static).update("")
        else:
            text_w.update(safe_text(item.text, highlight=self.ws.config.seed_query or None))
            self._q("#text-scroll").scroll_home(animate=False)
            self._q("#meta", Static).update(self._meta(item))
            self._q("#suggestion", Static).update(self._suggestion(item))
            self._q("#why", Static).update(self._why(item))
        self._q("#labelbar", Static).update(self._labelbar())
        self.update_progress()
        self.refresh_bindings()  # the footer offers accept and correct only for an item with a suggestion
        self.shown_at = time.perf_counter()
        if started is not None:
            self.call_after_refresh(self._record_latency, started)

    def _waiting_text(self) -> str:
        return panes.waiting_text(self.ws, self.retraining)

    def on_resize(self) -> None:
        item = self.ws.current()
        if item is not None:  # the probability bars fit the pane's width
            self.call_after_refresh(lambda: self._q("#suggestion", Static).update(self._suggestion(item)))

    def _record_latency(self, started: float) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def _meta(self, item: QueueItem) -> Text:
        return panes.meta_text(item)

    def _suggestion(self, item: QueueItem) -> Text:
        return panes.suggestion_text(item, self._q("#suggestion").size.width or 24)

    def _why(self, item: QueueItem) -> Text:
        return panes.why_text(item)

    def _labelbar(self) -> Text:
        return panes.labelbar_text(self.ws.config, self.ws.current(), self.toggled)

    def _q(self, selector, expect_type=None):
        """A widget of the labelling screen, whichever screen is on top: the 2 s poll and a finished
        retrain update it while the metrics or help screen is open (App.query_one would look in the
        top screen and find nothing)."""
        main = self.screen_stack[0]
        return main.query_one(selector, expect_type) if expect_type is not None else main.query_one(selector)

    def update_progress(self) -> None:
        p = self.ws.progress()
        parts = [f"done {p.done_session} this session", f"{p.left_in_queue} left in queue"]
        parts.append(f"{p.per_hour:.0f}/h" if p.per_hour else "–/h")
        if self.last_report is not None and self.last_report.metrics.get("accuracy") is not None:
            m = self.last_report.metrics
            base = f" (majority {m['majority_baseline']:.3f})" if m.get("majority_baseline") is not None else ""
            parts.append(f"model v{self.last_report.model_version}: acc {m['accuracy']:.3f}{base}, ECE {m['ece']:.3f}")
        if self.retraining:
            parts.append("retraining…")
        if p.others:
            parts.append(f"{p.others} other{'s' if p.others != 1 else ''} working")
        # The labelling screen's widgets, also while the metrics or help screen is on top (the 2 s poll
        # runs under them; App.query_one would look in the top screen and find nothing).
        main = self.screen_stack[0]
        main.query_one("#progress", Static).update(Text(" · ".join(parts)))
        summary = main.query_one("#summary", Static)
        width = (self.size.width or 80) - 2  # the line spans the screen (less its padding)
        summary.update(Text(panes.fit_summary(self.ws.summary, width), style="dim"))
        self._show_notice()

    # -- decisions -----------------------------------------------------------------
    DECISION_ACTIONS = {"accept", "correction", "skip", "flag", "undo", "retrain", "metrics", "help"}

    def check_action(self, action: str, parameters) -> bool | None:
        # Decisions and panes act on the labelling screen only (not under the metrics or help screens),
        # and not at all once the store has failed.
        if action in self.DECISION_ACTIONS and (self.screen is not self.screen_stack[0] or self.store_failed):
            return False
        if action in ("accept", "correction"):
            # offered only when there is a suggestion on screen to accept or correct (not during the
            # cold start, nor on a blind item); multi-label: Enter also confirms the toggled labels
            item = self.ws.current()
            if item is None:
                return False
            if action == "accept" and self.ws.config.multi_label:
                return True
            return bool(item.suggestion) and not item.suggestion_hidden
        return True

    def _decide(self, call, *args, then=None, **kwargs) -> None:
        """Send one Workspace decision through the link (off the UI thread over the socket), with its
        client message id fixed now, then ``then()`` on the UI thread once the server has stored it.
        While one decision is still on its way (the server is away), the next is refused with a
        sentence: the next item comes from the server's answer."""
        if self._holding():
            return
        kwargs["msg_id"] = new_msg_id()
        self.link.submit(
            lambda: call(*args, **kwargs),
            (lambda _answer: then()) if then is not None else None,
            self._failed,
            decision=True,
            what=getattr(call, "__name__", "decision"),
        )
        self.update_progress()

    def _holding(self) -> bool:
        """True (and one sentence) while a decision is on its way: nothing more is decided until the
        server's answer brings the next item."""
        if not self.link.held:
            return False
        self.toast("Your last decision is held until the server answers; it is sent then, once.", timeout=3)
        return True

    def _failed(self, exc: BaseException) -> None:
        """A call that failed, on the UI thread. A store failure (disk full, I/O error) ends the
        session: one sentence, nothing already saved is lost, no more keys reach the store, non-zero
        exit. Anything else is one notice and the session goes on."""
        if isinstance(exc, StoreError):
            self.fail_store(exc)
        elif isinstance(exc, ApiError) and exc.code == "server_gone":
            self.toast("The labelloop server is not answering; reconnecting…", severity="warning", timeout=3)
        elif isinstance(exc, ApiError) and exc.code == "not_leased":  # the lease expired, someone took it
            self.toast(str(exc), severity="warning", timeout=4)
            self.link.submit(self.ws.refresh, lambda _item: self.show_item(), self._failed)
        elif isinstance(exc, LabelloopError):
            self.toast(str(exc), severity="warning", timeout=3)
        else:
            raise exc

    def fail_store(self, exc: Exception, title: str = "The project store failed") -> None:
        if self.store_failed is not None:
            return
        self.store_failed = exc
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(
            FatalScreen(title, str(exc) + " The workstation will close; press any key (exit code 3)."),
            lambda _r: self.exit(return_code=EXIT_STORE_FAILED),
        )

    def _duration(self) -> float:
        return (time.perf_counter() - self.shown_at) * 1000

    def _decided(self, started: float) -> None:
        self.show_item(started)
        if self.ws.retraining and not self.retraining:  # the service started one (its cadence, or an empty queue)
            self._retrain_started()

    def on_key(self, event) -> None:
        if self.screen is not self.screen_stack[0] or self.store_failed:
            return
        label = self.key_to_label.get(event.key)
        if label is None:
            return
        event.stop()
        event.prevent_default()
        item = self.ws.current()
        if item is None:
            # nothing to label yet: said, not silently dropped (and never applied to an item unseen)
            self.toast("No item on screen yet: that key did nothing.", timeout=2)
            return
        started = time.perf_counter()
        if self.ws.config.multi_label:
            if label in self.toggled:
                self.toggled.remove(label)
            else:
                self.toggled.append(label)
            self._q("#labelbar", Static).update(self._labelbar())
            return
        self._label(item, [label], started)

    def _label(self, item: QueueItem, labels: list[str], started: float) -> None:
        """A label key (or confirmed toggles). Differing from the suggestion on screen is a correction:
        with [labels] ask_reason the reason picker opens with the label already chosen; otherwise it is
        stored with reason 'unspecified'."""
        if self._holding():
            return
        differs = bool(item.suggestion) and not item.suggestion_hidden and sorted(labels) != item.suggested_labels
        duration = self._duration()
        if differs and self.ws.config.ask_reason:

            def done(result) -> None:
                if result is None:
                    return
                chosen, reason, note = result
                t = time.perf_counter()
                self._decide(
                    self.ws.label,
                    item,
                    chosen,
                    reason=reason,
                    note=note,
                    duration_ms=duration,
                    then=lambda: self._decided(t),
                )

            self.push_screen(CorrectionScreen(self.ws.config, item.suggestion, preset=labels), done)
            return
        self._decide(self.ws.label, item, labels, duration_ms=duration, then=lambda: self._decided(started))

    def action_accept(self) -> None:
        item = self.ws.current()
        if item is None:
            return
        started = time.perf_counter()
        if self.ws.config.multi_label and self.toggled:
            self._label(item, list(self.toggled), started)
        else:
            self._decide(self.ws.accept, item, duration_ms=self._duration(), then=lambda: self._decided(started))

    def action_correction(self) -> None:
        item = self.ws.current()
        if item is None:
            return
        if self._holding():
            return
        if not item.suggestion or item.suggestion_hidden:
            self.toast("No suggestion to correct: press the right label's key.", severity="warning", timeout=3)
            return
        duration = self._duration()

        def done(result) -> None:
            if result is None:
                return
            labels, reason, note = result
            started = time.perf_counter()
            self._decide(
                self.ws.correction,
                item,
                labels,
                reason,
                note,
                duration_ms=duration,
                then=lambda: self._decided(started),
            )

        self.push_screen(CorrectionScreen(self.ws.config, item.suggestion), done)

    def _decide_with_note(self, decide, title: str, prompt: str) -> None:
        """Skip and flag: ask for an optional note, then record the decision (Escape cancels)."""
        item = self.ws.current()
        if item is None or self._holding():
            return
        duration = self._duration()

        def done(note) -> None:
            if note is None:
                return
            started = time.perf_counter()
            self._decide(decide, item, note, duration_ms=duration, then=lambda: self._decided(started))

        self.push_screen(NoteScreen(title, prompt), done)

    def action_skip(self) -> None:
        self._decide_with_note(self.ws.skip, "Skip this item", "Why (optional)? Enter skips, Escape cancels.")

    def action_flag(self) -> None:
        self._decide_with_note(
            self.ws.flag, "Flag for review", "Note for the reviewer (optional). Enter flags, Escape cancels."
        )

    def action_undo(self) -> None:
        if self._holding():
            return
        mid = new_msg_id()
        self.link.submit(lambda: self.ws.undo(mid), self._undone, self._failed, decision=True, what="undo")

    def _undone(self, item) -> None:
        if item is None:
            self.toast("Nothing to undo.", timeout=2)
            return
        self.toast(f"Undone: {safe_line(item.item_id, 30)} is back.", timeout=2)
        self.show_item()

    async def action_quit(self) -> None:
        """q. With a decision still held (the server away), the first q says so; a second one quits
        without it (the decision is then not stored, and the exit says so)."""
        held = self.link.held
        if held and not self._quit_warned:
            self._quit_warned = True
            self.toast(
                f"{held} decision{'s are' if held != 1 else ' is'} held until the server answers: "
                "wait for it, or press q again to quit without it.",
                severity="warning",
                timeout=6,
            )
            return
        await super().action_quit()

    def action_help(self) -> None:
        self.link.submit(
            self.ws.guidelines, lambda text: self.push_screen(HelpScreen(self.ws.config, text)), self._failed
        )

    def action_metrics(self) -> None:
        self.push_screen(MetricsScreen(self.ws, self.link))

    def action_retrain(self) -> None:
        if self.retraining:
            self.toast("A retrain is already running.", timeout=2)
            return
        self.start_retrain("asked for")

    # -- retraining in the background ---------------------------------------------------
    def start_retrain(self, why: str) -> None:
        def refused(exc: BaseException) -> None:
            if isinstance(exc, LabelloopError) and not isinstance(exc, StoreError):
                self.toast(f"Retrain refused: {exc}", severity="warning", timeout=5)
            else:
                self._failed(exc)

        self.link.submit(lambda: self.ws.retrain_start(why), lambda _a: self._retrain_started(), refused)

    def _retrain_started(self) -> None:
        job = self.ws.job or {}
        self.retraining = True
        bar = self._q("#retrain-bar", ProgressBar)
        bar.display = True
        bar.update(progress=job.get("fraction", 0.0))
        self.toast(f"Retraining ({job.get('why', 'asked for')}); keep labelling.", timeout=2)
        self.update_progress()

    def _warm_up(self) -> None:
        if not self.store_failed:
            self.ws.warm_up()
            gc.freeze()  # the executor's machinery lives as long as the app too

    def _poll(self) -> None:
        """Every quarter second: a retrain's progress, its end, and what changed meanwhile. Over the
        socket the poll waits for the calls before it (and is not sent while the server is away)."""
        from textual.css.query import NoMatches

        try:
            self._show_notice()
        except NoMatches:  # the app is closing
            return
        if self.store_failed or self.link.busy or (not self.retraining and self._poll_skip()):
            return
        had_item = self.ws.current() is not None
        self.link.submit(self.ws.poll, lambda _a: self._polled(had_item), self._poll_failed)

    def _poll_failed(self, exc: BaseException) -> None:
        if isinstance(exc, StoreError):
            self.fail_store(exc)

    def _polled(self, had_item: bool) -> None:
        from textual.css.query import NoMatches

        try:
            self._after_poll(had_item)
        except NoMatches:
            # the labelling screen's widgets are gone: the app is closing (a poll that fires during
            # the teardown once crashed the exit under load); nothing is left to update
            return

    def _after_poll(self, had_item: bool) -> None:
        job = self.ws.job or {}
        if self.ws.retraining:
            if not self.retraining:
                self._retrain_started()
            self._q("#retrain-bar", ProgressBar).update(progress=job.get("fraction", 0.0))
        elif self.retraining or self.ws.batch != self._seen_batch:
            # our retrain ended, or another session's came and went between two polls: say so
            self._retrain_finished(job)
        self._seen_batch = self.ws.batch
        if not had_item and self.ws.current() is not None:
            self.show_item()
        else:
            if self.ws.current() is None:
                self._q("#item-text", Static).update(Text(self._waiting_text(), style="italic"))
            self.update_progress()

    def _show_notice(self) -> None:
        """The notice line: the reconnecting line while the server is away, else the newest notice
        (with how many more arrived with it), else empty."""
        from textual.css.query import NoMatches

        try:
            widget = self._q("#notice", Static)
        except NoMatches:  # before the screen is composed, or while the app closes
            return
        line = link_line(self.link)
        if line is None:
            now = time.monotonic()
            live = [n for n in self._notices if n[2] > now]
            if live:
                text, severity, _until = live[-1]
                style = {"warning": "yellow", "error": "bold red"}.get(severity, "")
                line = Text(text, style=style, overflow="ellipsis", no_wrap=True)
                if len(live) > 1:
                    line.append(f"  (+{len(live) - 1} more)", style="dim")
            else:
                line = Text("")
        widget.update(line)

    _poll_count = 0

    def _poll_skip(self) -> bool:
        """While no retrain runs, poll every 2 s (others working, a retrain someone else started)."""
        self._poll_count += 1
        return self._poll_count % 8 != 0

    def _retrain_finished(self, job: dict) -> None:
        self.retraining = False
        self._q("#retrain-bar", ProgressBar).display = False
        if job.get("error"):
            if job["error"] != "cancelled":
                self.toast(f"Retrain failed: {job['error']}", severity="error", timeout=8)
            self.update_progress()
            return
        r = Report(job.get("report") or {})
        if not r:
            return
        self.last_report = r
        # the item on screen stays until it is decided (it is leased to this annotator)
        if r.get("model_version") and (r.get("metrics") or {}).get("accuracy") is not None:
            m = r.metrics
            base = (
                f" (majority baseline {m['majority_baseline']:.3f})" if m.get("majority_baseline") is not None else ""
            )
            self.toast(
                f"Model v{r.model_version}: test accuracy {m['accuracy']:.3f}{base}, "
                f"ECE {m['ece']:.3f}; new batch of {r.batch_size}.",
                timeout=4,
            )
        else:
            self.toast(f"New batch of {r.batch_size} ({safe_line(r.strategy, 40)}).", timeout=3)
        for w in (r.get("warnings") or [])[:2]:
            self.toast(w, severity="warning", timeout=6)
        if self.ws.current() is None:
            self.link.submit(self.ws.refresh, lambda _item: self.show_item(), self._failed)
        else:
            self._q("#labelbar", Static).update(self._labelbar())
            self.update_progress()

    def on_unmount(self) -> None:
        self.unsent = self.link.close(wait=2.0)
        if self._own_ws:
            self.ws.close()


def run_app(project_dir: Path) -> int:
    app = LabelApp(project_dir)
    try:
        app.run()
    finally:
        try:
            app.ws.close()
        except Exception:  # a failed store may fail to close too; its committed rows are on disk
            pass
    import sys

    if app.unsent:
        print(
            f"labelloop: {app.unsent} decision{'s were' if app.unsent != 1 else ' was'} not stored: "
            "the server did not answer before you quit.",
            file=sys.stderr,
        )
    if app.store_failed is not None:
        print(f"labelloop: {safe_line(str(app.store_failed), None)}", file=sys.stderr)
        return EXIT_STORE_FAILED
    return app.return_code or 0
