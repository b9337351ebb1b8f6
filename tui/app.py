"""The annotator's workstation: a Textual app over a Workspace.

A client only: it talks to ``core.workspace.Workspace`` and never to DuckDB,
scikit-learn or files directly. Retraining runs in a thread worker and reports
back through messages, so labelling goes on while the model trains.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Footer, Header, ProgressBar, Static
from textual.worker import get_current_worker

from labelloop.core.errors import LabelloopError, StoreError
from labelloop.core.workspace import QueueItem, Workspace, as_store_error
from labelloop.tui.safe_text import clean, safe_line, safe_text
from labelloop.tui.screens import CorrectionScreen, FatalScreen, HelpScreen, MetricsScreen, NoteScreen

EXIT_STORE_FAILED = 3

BAR_WIDTH = 20


class RetrainProgress(Message):
    def __init__(self, fraction: float, step: str) -> None:
        super().__init__()
        self.fraction, self.step = fraction, step


class RetrainDone(Message):
    def __init__(self, report, queue: list[QueueItem]) -> None:
        super().__init__()
        self.report, self.queue = report, queue


class RetrainFailed(Message):
    def __init__(self, error: str, store_failure: StoreError | None = None) -> None:
        super().__init__()
        self.error, self.store_failure = error, store_failure


class _Cancelled(Exception):
    pass


class LabelApp(App):
    """``labelloop label DIR``."""

    CSS_PATH = "app.tcss"
    TITLE = "labelloop"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("enter", "accept", "Accept", id="accept"),
        Binding("x", "reject", "Reject", id="reject"),
        Binding("s", "skip", "Skip", id="skip"),
        Binding("f", "flag", "Flag", id="flag"),
        Binding("u,backspace", "undo", "Undo", id="undo"),
        Binding("t", "retrain", "Retrain", id="retrain", show=False),
        Binding("m", "metrics", "Metrics", id="metrics"),
        Binding("question_mark,f1", "help", "Help", id="help", key_display="?"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    retraining: reactive[bool] = reactive(False)

    def __init__(self, project_dir: Path | str, *, actor: str | None = None, workspace: Workspace | None = None,
                 retrain_in_process: bool = True):
        super().__init__()
        self.ws = workspace or Workspace(project_dir, actor=actor)
        # Retrains train and score in a child process (one, reused), so they never hold the interpreter
        # lock the UI thread needs; False runs them in a thread of this process instead.
        self.retrain_in_process = retrain_in_process
        self._executor = None

        cfg = self.ws.config
        self.key_to_label = {self._key_name(k): lab for lab, k in cfg.label_keys.items()}
        self.toggled: list[str] = []
        self.shown_at = time.perf_counter()
        self.latencies_ms: list[float] = []   # key handler -> next item rendered (read by bench/)
        self.last_report = None
        self.store_failed: StoreError | None = None
        self.sub_title = f"{safe_line(cfg.name, 40)} · {safe_line(self.ws.actor, 24)}"

    def toast(self, message: str, **kw) -> None:
        """A notification whose text is shown as text: ids, labels and errors from data are never
        parsed as markup (an id like reddit[/r/python]1 used to crash the app) and their control
        characters are made visible."""
        self.notify(safe_line(message, None), markup=False, **kw)

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
        yield Static("", id="labelbar", markup=False)
        with Horizontal(id="status"):
            yield Static("", id="progress", markup=False)
            yield ProgressBar(total=1.0, show_eta=False, id="retrain-bar")
        yield Footer()

    def on_mount(self) -> None:
        # Keys remapped in labelloop.toml [keys] override the defaults by binding id.
        from labelloop.core.config import DEFAULT_ACTION_KEYS
        self.set_keymap({action: self._key_name(key) for action, key in self.ws.config.action_keys.items()
                         if key != DEFAULT_ACTION_KEYS[action]})
        self.query_one("#retrain-bar").display = False
        self.show_item()
        # Everything built so far (Textual, the store, numpy, ...) lives as long as the app: taking it out
        # of the cyclic collector's view keeps a full collection short. Measured on a 1M-item project:
        # full collections paused the UI thread 70-80 ms, the largest frame gaps while retraining.
        self.call_after_refresh(gc.freeze)
        if self.ws.current() is None:
            self.start_retrain("the queue is empty")
        elif self.retrain_in_process and self.ws.config.retrain_every:
            # start the training process once the first item is on screen (its imports take a second
            # or two of CPU that start-up should not wait for), so the first retrain finds it ready
            self.set_timer(1.5, self._training_process)

    # -- rendering --------------------------------------------------------------
    def show_item(self, started: float | None = None) -> None:
        item = self.ws.current()
        self.toggled = []
        text_w = self.query_one("#item-text", Static)
        if item is None:
            text_w.update(Text("No items in the queue." + (" Retraining to fill it…" if self.retraining else
                                                          " Press t to retrain and fill it."), style="italic"))
            self.query_one("#meta", Static).update("")
            self.query_one("#suggestion", Static).update("")
            self.query_one("#why", Static).update("")
        else:
            text_w.update(safe_text(item.text, highlight=self.ws.config.seed_query or None))
            self.query_one("#text-scroll").scroll_home(animate=False)
            self.query_one("#meta", Static).update(self._meta(item))
            self.query_one("#suggestion", Static).update(self._suggestion(item))
            self.query_one("#why", Static).update(self._why(item))
        self.query_one("#labelbar", Static).update(self._labelbar())
        self.update_progress()
        self.shown_at = time.perf_counter()
        if started is not None:
            self.call_after_refresh(self._record_latency, started)

    def on_resize(self) -> None:
        item = self.ws.current()
        if item is not None:  # the probability bars fit the pane's width
            self.call_after_refresh(lambda: self.query_one("#suggestion", Static).update(self._suggestion(item)))

    def _record_latency(self, started: float) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def _meta(self, item: QueueItem) -> Text:
        t = Text()
        t.append("id ", style="dim")
        t.append(safe_line(item.item_id, 40))
        for k, v in list(item.metadata.items())[:6]:
            t.append(f"   {safe_line(k, 20)} ", style="dim")
            t.append(safe_line(v, 40))
        return t

    def _suggestion(self, item: QueueItem) -> Text:
        t = Text()
        if not item.probs:
            t.append("No model yet", style="bold")
            t.append("\nlabel from the text alone (cold start)", style="dim")
            return t
        if item.suggestion_hidden:
            t.append("Suggestion hidden", style="bold")
            t.append("\n(blind item: your label measures anchoring)", style="dim")
            return t
        t.append(f"Model v{item.model_version} suggests\n", style="dim")
        ranked = sorted(item.probs.items(), key=lambda kv: -kv[1])[:5]
        width = min(16, max(len(k) for k, _ in ranked))
        pane = self.query_one("#suggestion").size.width or 24
        bar = max(4, min(BAR_WIDTH, pane - width - 8))  # label, bar and percentage on one line
        for i, (lab, p) in enumerate(ranked):
            filled = int(round(p * bar))
            t.append(f"{safe_line(lab, width):<{width}} ", style="bold" if i == 0 else "")
            t.append("█" * filled, style="green" if i == 0 else "blue")
            t.append("░" * (bar - filled), style="dim")
            t.append(f" {p:5.1%}\n")
        return t

    def _why(self, item: QueueItem) -> Text:
        t = Text()
        if item.score is not None and not item.audit:
            t.append("uncertainty ", style="dim")
            t.append(f"{item.score:.3f}\n")
        t.append("why: ", style="dim")
        t.append(item.why)
        return t

    def _labelbar(self) -> Text:
        t = Text()
        multi = self.ws.config.multi_label
        for lab, key in self.ws.config.label_keys.items():
            on_ = lab in self.toggled
            t.append(f" {key} ", style="reverse bold" if on_ else "reverse")
            t.append(f" {safe_line(lab, 24)}  ", style="bold" if on_ else "")
        item = self.ws.current()
        if item and item.suggestion and not item.suggestion_hidden:
            t.append("  Enter", style="reverse")
            t.append(f" accept {safe_line(item.suggestion, 20)}" if not (multi and self.toggled) else " confirm")
        elif multi:
            t.append("  Enter", style="reverse")
            t.append(" confirm toggled labels")
        return t

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
        self.query_one("#progress", Static).update(Text(" · ".join(parts)))

    # -- decisions -----------------------------------------------------------------
    DECISION_ACTIONS = {"accept", "reject", "skip", "flag", "undo", "retrain", "metrics", "help"}

    def check_action(self, action: str, parameters) -> bool | None:
        # Decisions and panes act on the labelling screen only (not under the metrics or help screens),
        # and not at all once the store has failed.
        if action in self.DECISION_ACTIONS and (self.screen is not self.screen_stack[0] or self.store_failed):
            return False
        return True

    def _decide(self, call, *args, **kwargs) -> bool:
        """Run one Workspace decision. A store failure (disk full, I/O error) ends the session: one
        sentence, nothing already saved is lost, no more keys reach the store, non-zero exit."""
        try:
            call(*args, **kwargs)
            return True
        except StoreError as exc:
            self.fail_store(exc)
        except LabelloopError as exc:
            self.toast(str(exc), severity="warning", timeout=3)
        return False

    def fail_store(self, exc: StoreError) -> None:
        if self.store_failed is not None:
            return
        self.store_failed = exc
        self.workers.cancel_group(self, "retrain")
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.push_screen(FatalScreen("The project store failed", str(exc) +
                                     " The workstation will close; press any key (exit code 3)."),
                         lambda _r: self.exit(return_code=EXIT_STORE_FAILED))

    def _duration(self) -> float:
        return (time.perf_counter() - self.shown_at) * 1000

    def _decided(self, started: float) -> None:
        self.show_item(started)
        every = self.ws.config.retrain_every
        if every and self.ws.decisions_since_train >= every and not self.retraining:
            self.start_retrain(f"auto-retrain after {every} labels")
        elif self.ws.current() is None and not self.retraining:
            self.start_retrain("the queue is empty")

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
            return
        started = time.perf_counter()
        if self.ws.config.multi_label:
            if label in self.toggled:
                self.toggled.remove(label)
            else:
                self.toggled.append(label)
            self.query_one("#labelbar", Static).update(self._labelbar())
            return
        self._label(item, [label], started)

    def _label(self, item: QueueItem, labels: list[str], started: float) -> None:
        """A label key (or confirmed toggles). Differing from the suggestion on screen is a correction:
        with [labels] ask_reason the reason picker opens with the label already chosen; otherwise it is
        stored with reason 'unspecified'."""
        differs = bool(item.suggestion) and not item.suggestion_hidden and sorted(labels) != item.suggested_labels
        duration = self._duration()
        if differs and self.ws.config.ask_reason:
            def done(result) -> None:
                if result is None:
                    return
                chosen, reason, note = result
                t = time.perf_counter()
                if self._decide(self.ws.label, item, chosen, reason=reason, note=note, duration_ms=duration):
                    self._decided(t)
            self.push_screen(CorrectionScreen(self.ws.config, item.suggestion, preset=labels), done)
            return
        if self._decide(self.ws.label, item, labels, duration_ms=duration):
            self._decided(started)

    def action_accept(self) -> None:
        item = self.ws.current()
        if item is None:
            return
        started = time.perf_counter()
        if self.ws.config.multi_label and self.toggled:
            self._label(item, list(self.toggled), started)
        elif self._decide(self.ws.accept, item, duration_ms=self._duration()):
            self._decided(started)

    def action_reject(self) -> None:
        item = self.ws.current()
        if item is None:
            return
        if not item.suggestion or item.suggestion_hidden:
            self.toast("No suggestion to reject: press the right label's key.", severity="warning", timeout=3)
            return
        duration = self._duration()

        def done(result) -> None:
            if result is None:
                return
            labels, reason, note = result
            started = time.perf_counter()
            if self._decide(self.ws.reject, item, labels, reason, note, duration_ms=duration):
                self._decided(started)
        self.push_screen(CorrectionScreen(self.ws.config, item.suggestion), done)

    def _decide_with_note(self, decide, title: str, prompt: str) -> None:
        """Skip and flag: ask for an optional note, then record the decision (Escape cancels)."""
        item = self.ws.current()
        if item is None:
            return
        duration = self._duration()

        def done(note) -> None:
            if note is None:
                return
            started = time.perf_counter()
            if self._decide(decide, item, note, duration_ms=duration):
                self._decided(started)
        self.push_screen(NoteScreen(title, prompt), done)

    def action_skip(self) -> None:
        self._decide_with_note(self.ws.skip, "Skip this item", "Why (optional)? Enter skips, Escape cancels.")

    def action_flag(self) -> None:
        self._decide_with_note(self.ws.flag, "Flag for review",
                               "Note for the reviewer (optional). Enter flags, Escape cancels.")

    def action_undo(self) -> None:
        result: list = []
        if not self._decide(lambda: result.append(self.ws.undo())):
            return
        item = result[0]
        if item is None:
            self.toast("Nothing to undo.", timeout=2)
            return
        self.toast(f"Undone: {safe_line(item.item_id, 30)} is back.", timeout=2)
        self.show_item()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.ws.config, self.ws.guidelines()))

    def action_metrics(self) -> None:
        self.push_screen(MetricsScreen(self.ws))

    def action_retrain(self) -> None:
        if self.retraining:
            self.toast("A retrain is already running.", timeout=2)
            return
        self.start_retrain("asked for")

    # -- retraining in the background ---------------------------------------------------
    def start_retrain(self, why: str) -> None:
        self.retraining = True
        self.ws.decisions_since_train = 0
        bar = self.query_one("#retrain-bar", ProgressBar)
        bar.display = True
        bar.update(progress=0.0)
        self.toast(f"Retraining ({why}); keep labelling.", timeout=2)
        self.update_progress()
        self.retrain_worker()

    @work(thread=True, exclusive=True, group="retrain", exit_on_error=False)
    def retrain_worker(self) -> None:
        worker = get_current_worker()
        project = self.ws.worker_project()

        def progress(fraction: float, step: str) -> None:
            if worker.is_cancelled:
                raise _Cancelled()
            self.post_message(RetrainProgress(fraction, step))
        try:
            executor = self._training_process() if self.retrain_in_process else None
            report = self.ws.retrain(project=project, progress=progress, executor=executor)
            queue = self.ws.load_queue(project.store)
        except _Cancelled:
            return
        except Exception as exc:  # shown, not raised: labelling goes on, unless the store itself failed
            store_failure = as_store_error(exc)
            from concurrent.futures.process import BrokenProcessPool
            if isinstance(exc, BrokenProcessPool):  # the training process died (e.g. out of memory)
                self._executor = None
                exc = LabelloopError("the training process stopped unexpectedly; press t to try again")
            text = str(exc) if isinstance(exc, LabelloopError) else f"{type(exc).__name__}: {exc}"
            self.post_message(RetrainFailed(text, store_failure))
            return
        self.post_message(RetrainDone(report, queue))

    @on(RetrainProgress)
    def _on_retrain_progress(self, msg: RetrainProgress) -> None:
        self.query_one("#retrain-bar", ProgressBar).update(progress=msg.fraction)

    @on(RetrainDone)
    def _on_retrain_done(self, msg: RetrainDone) -> None:
        self.retraining = False
        if self.store_failed:
            return
        self.last_report = msg.report
        self.query_one("#retrain-bar", ProgressBar).display = False
        before = self.ws.current()
        changed = self.ws.set_queue(msg.queue)
        r = msg.report
        # the item on screen stays until it is decided; what comes after it changed
        stays = " The item on screen stays; the queue after it changed." if before is not None and changed else ""
        if r.model_version and r.metrics.get("accuracy") is not None:
            m = r.metrics
            base = f" (majority baseline {m['majority_baseline']:.3f})" if m.get("majority_baseline") is not None else ""
            self.toast(f"Model v{r.model_version}: test accuracy {m['accuracy']:.3f}{base}, "
                       f"ECE {m['ece']:.3f}; new batch of {r.batch_size}.{stays}", timeout=4)
        else:
            self.toast(f"New batch of {r.batch_size} ({r.strategy}).{stays}", timeout=3)
        for w in r.warnings[:2]:
            self.toast(w, severity="warning", timeout=6)
        after = self.ws.current()
        if before is None or after is None or before.item_id != after.item_id:
            self.show_item()
        else:
            self.query_one("#labelbar", Static).update(self._labelbar())
            self.update_progress()

    @on(RetrainFailed)
    def _on_retrain_failed(self, msg: RetrainFailed) -> None:
        self.retraining = False
        if msg.store_failure is not None:
            self.fail_store(msg.store_failure)
            return
        self.query_one("#retrain-bar", ProgressBar).display = False
        self.toast(f"Retrain failed: {msg.error}", severity="error", timeout=8)
        self.update_progress()

    def _training_process(self):
        """The one worker process for training and scoring (started on first use, then reused, so the
        features stay loaded in it between retrains)."""
        if self._executor is None:
            import multiprocessing
            import sys
            from concurrent.futures import ProcessPoolExecutor

            from labelloop.core.loop import warm_up, worker_quiet
            # multiprocessing hands sys.stderr's file descriptor to the processes it starts (the
            # resource tracker when the executor is made, the worker on the first submit): Textual's
            # print capture has none (-1), and the terminal must not receive their output, so they get
            # /dev/null (and the worker sends its stdout there too: worker_quiet).
            captured = sys.stderr
            with open(os.devnull, "w") as devnull:
                try:
                    sys.stderr = devnull
                    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                   initializer=worker_quiet)
                    executor.submit(warm_up)
                finally:
                    sys.stderr = captured
            self._executor = executor
            gc.freeze()  # the executor's machinery lives as long as the app too
        return self._executor

    def on_unmount(self) -> None:
        self.workers.cancel_group(self, "retrain")
        executor, self._executor = self._executor, None
        if executor is not None:
            # a retrain still computing is abandoned: nothing of it was stored
            for proc in list(getattr(executor, "_processes", {}).values()):
                try:
                    proc.terminate()
                except Exception:
                    pass
            executor.shutdown(wait=False, cancel_futures=True)


def run_app(project_dir: Path) -> int:
    app = LabelApp(project_dir)
    try:
        app.run()
    finally:
        try:
            app.ws.close()
        except Exception:  # a failed store may fail to close too; its committed rows are on disk
            pass
    if app.store_failed is not None:
        import sys
        print(f"labelloop: {safe_line(str(app.store_failed), None)}", file=sys.stderr)
        return EXIT_STORE_FAILED
    return app.return_code or 0
