"""Modal and full screens of the workstation: correction, note, help, metrics."""

from __future__ import annotations

import re

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Markdown, Static
from textual_plotext import PlotextPlot

from labelloop.core.config import ProjectConfig
from labelloop.tui.safe_text import clean, safe_line


class _KeyTarget(Static, can_focus=True):
    """A focusable body: key presses reach it and bubble up to its screen's on_key."""


class CorrectionScreen(ModalScreen):
    """Reject the suggestion: the right label, then a reason from the error taxonomy (one digit), with an
    optional note. With two labels the right one is the other one, so it takes two keys: x, then a digit."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("n", "note", "Add a note")]
    AUTO_FOCUS = "#correction-body"  # label and reason keys go to the body, not the hidden note input

    def __init__(self, config: ProjectConfig, suggestion: str, preset: list[str] | None = None):
        super().__init__()
        self.config = config
        self.suggestion = suggestion
        others = [lab for lab in config.labels if lab != suggestion]
        self.label: str | None = others[0] if len(others) == 1 and not config.multi_label else None
        self.labels: list[str] | None = list(preset) if preset else None  # chosen with a label key already
        if self.labels:
            self.label = "|".join(self.labels)
        self.reason: str | None = None
        self.note_text: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield _KeyTarget("", id="correction-body", markup=False)
            yield Input(placeholder="note (optional): Enter to save", id="note")
        yield Footer()  # the keys that work here: Escape cancels

    def on_mount(self) -> None:
        self.query_one("#note").display = False
        self.refresh_body()

    def refresh_body(self) -> None:
        t = Text()
        t.append("Reject the suggestion ", style="bold")
        t.append(safe_line(self.suggestion, 30), style="bold red")
        t.append("\n\n")
        if self.label is None:
            t.append("1. The right label:\n", style="bold")
            for lab, key in self.config.label_keys.items():
                if lab == self.suggestion and not self.config.multi_label:
                    continue
                t.append(f"  {safe_line(key, 12)} ", style="reverse")
                t.append(f" {safe_line(lab, 30)}\n")
        else:
            t.append("Right label: ", style="dim")
            t.append(f"{safe_line(self.label, 30)}\n\n", style="bold green")
            t.append("2. Why was the suggestion wrong?\n", style="bold")
            for i, reason in enumerate(self.config.taxonomy, 1):
                t.append(f"  {i} ", style="reverse")
                t.append(f" {safe_line(reason, 60)}\n")
            if self.note_text:
                t.append(f"\nNote: {safe_line(self.note_text, 60)}\n", style="italic")
            t.append("\n n ", style="reverse")
            t.append(" add a note first   ")
        t.append(" Esc ", style="reverse")
        t.append(" cancel")
        self.query_one("#correction-body", Static).update(t)

    def on_key(self, event) -> None:
        if self.query_one("#note").display:
            return
        key = event.key
        if self.label is None:
            for lab, k in self.config.label_keys.items():
                if k == key and (lab != self.suggestion or self.config.multi_label):
                    event.stop()
                    self.label = lab
                    self.refresh_body()
                    return
            return
        if key.isdigit() and 1 <= int(key) <= len(self.config.taxonomy):
            event.stop()
            self.reason = self.config.taxonomy[int(key) - 1]
            self.dismiss((self.labels or [self.label], self.reason, self.note_text))

    def action_note(self) -> None:
        if self.label is None:
            return
        note = self.query_one("#note", Input)
        note.display = True
        note.focus()

    @on(Input.Submitted, "#note")
    def _note_done(self, event: Input.Submitted) -> None:
        # the note is written; the reason still comes from a digit
        self.query_one("#note").display = False
        self.note_text = event.value.strip() or None
        self.query_one("#correction-body").focus()
        self.refresh_body()

    def action_cancel(self) -> None:
        self.dismiss(None)


class NoteScreen(ModalScreen):
    """An optional one-line reason or note: Enter confirms (empty is fine), Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, prompt: str, *, compact: bool = False):
        """``compact``: a strip at the bottom of the screen (the item stays in view while one types)."""
        super().__init__(classes="compact" if compact else None)
        self.title_text, self.prompt = title, prompt

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.title_text, style="bold"), markup=False)
            yield Static(Text(self.prompt, style="dim"), markup=False)
            yield Input(id="note-input")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


_REF_DEF = re.compile(r"^( {0,3})\[([^\]\n]+)\]:[ \t]*(\S.*)$", re.M)
_REF_USE = re.compile(r"\[([^\]\n]+)\]\[([^\]\n]*)\]")


def show_link_targets(markdown: str) -> str:
    """Markdown links and images written out as ``text (target)``: the guidelines are rendered as
    Markdown, but a link's text never hides where it points."""
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(3)})" if m.group(3) else m.group(2), markdown)
    text = _REF_DEF.sub(lambda m: f"{m.group(1)}\\[{m.group(2)}\\]: {m.group(3)}", text)  # shown, not consumed
    return _REF_USE.sub(lambda m: f"{m.group(1)} \\[{m.group(2) or m.group(1)}\\]", text)


class HelpScreen(ModalScreen):
    """Keys and the project's guidelines."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, config: ProjectConfig, guidelines: str, keys: list[tuple[str, str]] | None = None):
        """``keys``: (key, what it does) rows of the screen that opened it (the review screen's own);
        by default the labelling screen's."""
        super().__init__()
        self.config, self.guidelines, self.rows = config, guidelines, keys

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static(self._keys(), id="help-keys", markup=False)
            with VerticalScroll(id="help-guidelines"):
                # the guidelines file is data: control characters (OSC 52, CSI ...) are made visible
                # before Markdown sees the text, so nothing in it reaches the terminal as a sequence
                yield Markdown(show_link_targets(clean(self.guidelines)))
        yield Footer()

    def on_mount(self) -> None:
        if self.app.size.height < 30:  # 80x24: every row for the keys and the guidelines
            self.query_one("#help-dialog").styles.height = "100%"
            self.query_one("#help-dialog").styles.width = "100%"

    def _keys(self) -> Table:
        k = self.config.action_keys

        def show(key: str) -> str:
            return {"question_mark": "?", "enter": "Enter", "backspace": "Backspace"}.get(key, key)

        table = Table(title="Keys", show_header=False, box=None, padding=(0, 2))
        table.add_column(style="bold reverse")
        table.add_column()
        if self.rows is not None:
            for key, what in self.rows:
                table.add_row(Text(f" {safe_line(key, 12)} "), Text(what))
            return table
        for lab, key in self.config.label_keys.items():
            table.add_row(
                Text(f" {safe_line(key, 12)} "),
                Text(f"label {safe_line(lab, 30)}" + (" (toggle; Enter confirms)" if self.config.multi_label else "")),
            )
        rows = [
            ("accept", "accept the model's suggestion"),
            ("correction", "correct it: right label + reason (+ n for a note)"),
            ("skip", "skip (optional reason)"),
            ("flag", "flag for a reviewer"),
            ("undo", "undo the last decision (again and again); Backspace too"),
            ("retrain", "retrain now (labelling goes on)"),
            ("metrics", "metrics: curves, calibration, recall"),
            ("help", "this help; F1 too"),
            ("quit", "quit (every decision is already saved)"),
        ]
        for action, what in rows:
            table.add_row(Text(f" {safe_line(show(k[action]), 12)} "), Text(what))
        return table

    def action_close(self) -> None:
        self.dismiss(None)


class FatalScreen(ModalScreen):
    """An error worth reading before the workstation closes (e.g. the store failed): any key closes."""

    def __init__(self, title: str, message: str):
        super().__init__()
        self.title_text, self.message = title, message

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield _KeyTarget(Text(self.title_text, style="bold red"), id="fatal-title", markup=False)
            yield Static(Text(safe_line(self.message, None)), id="fatal-message", markup=False)

    def on_mount(self) -> None:
        self.query_one("#fatal-title").focus()

    def on_key(self, event) -> None:
        event.stop()
        self.dismiss(None)


class MetricsScreen(Screen):
    """Learning curves (AL vs random audit), calibration, per-class recall, labels, throughput, warnings."""

    BINDINGS = [
        Binding("escape,m,q", "close", "Back"),
        Binding("r", "refresh", "Refresh"),
        # the numbers and the warning signs sit under the charts: below the fold at 80x24
        Binding("n", "numbers", "Numbers & warnings ↓"),
        Binding("home", "charts", "Charts ↑", show=False),
    ]

    def action_numbers(self) -> None:
        self.query_one("#metrics-scroll").scroll_end(animate=False)

    def action_charts(self) -> None:
        self.query_one("#metrics-scroll").scroll_home(animate=False)

    def __init__(self, workspace, link=None):
        super().__init__()
        self.ws = workspace
        self.link = link  # over the socket, the workstation's link (one thread talks to the server)

    def compose(self) -> ComposeResult:
        yield Static("", id="metrics-summary", markup=False)
        with VerticalScroll(id="metrics-scroll"):
            with Grid(id="metrics-grid"):
                yield PlotextPlot(id="curve")
                yield PlotextPlot(id="arms")
                yield PlotextPlot(id="reliability")
                yield PlotextPlot(id="recall")
            yield Static("", id="numbers", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()
        self.query_one("#metrics-scroll").focus()

    def action_refresh(self) -> None:
        self.query_one("#numbers", Static).update(Text("computing…", style="italic"))
        if self.link is not None and self.link.threaded:
            self.link.submit(self.ws.metrics, lambda answer: self.draw(answer["snapshot"], None), self._failed)
        else:
            self.load()

    def _failed(self, exc: BaseException) -> None:
        self.query_one("#numbers", Static).update(Text(f"metrics unavailable: {safe_line(str(exc), None)}"))

    @work(thread=True, exclusive=True, group="metrics", exit_on_error=False)
    def load(self) -> None:
        """One snapshot: every chart reads what the retrains measured and stored (no training here)."""
        answer = self.ws.metrics()
        self.app.call_from_thread(self.draw, answer["snapshot"], None)

    @staticmethod
    def _int_ticks(plt, xs: list[int]) -> None:
        """Integer label counts on the x axis (at most 6 ticks)."""
        xs = sorted(set(int(x) for x in xs))
        if not xs:
            return
        step = max(1, -(-len(xs) // 6))
        ticks = xs[::step] if xs[-1] in xs[::step] else xs[::step] + [xs[-1]]
        plt.xticks(ticks, [str(t) for t in ticks])

    def draw(self, snap: dict, arms: dict | None = None) -> None:
        latest = snap.get("latest") or {}
        ms = [m for m in (snap.get("measurements") or []) if m.get("accuracy") is not None]
        fired = (ms[-1].get("warnings") if ms else None) or []
        head = Text()
        head.append("Is AL working? ", style="bold")
        head.append(safe_line(snap.get("summary") or "no model measured yet", None))
        if fired:
            head.append(
                "\nWarning signs: " + ", ".join(fired) + " (details below; labelloop check for what to do)",
                style="yellow",
            )
        self.query_one("#metrics-summary", Static).update(head)

        # One point per model version, markers that differ without colour, legends in the titles (outside
        # the data), integer label ticks.
        curve = self.query_one("#curve", PlotextPlot)
        plt = curve.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("Per version: ● acc ◆ macro-F1")
        plt.ylim(0, 1)
        plt.xlabel("labels")
        if ms:
            xs = [m["n_labels"] for m in ms]
            plt.plot(xs, [m["accuracy"] for m in ms], marker="●")
            plt.plot(xs, [m["macro_f1"] or 0 for m in ms], marker="◆")
            self._int_ticks(plt, xs)
        curve.refresh()

        arm_plot = self.query_one("#arms", PlotextPlot)
        plt = arm_plot.plt
        plt.clear_data()
        plt.clear_figure()
        pts = (snap.get("arms_latest") or {}).get("points") or []
        plt.title("Same budget: ▲ AL ■ random")
        plt.ylim(0, 1)
        plt.xlabel("labels per model")
        if pts:
            xs = [p["labels_each"] for p in pts]
            plt.plot(xs, [p["al"] for p in pts], marker="▲")
            plt.plot(xs, [p["random"] for p in pts], marker="■")
            self._int_ticks(plt, xs)
        arm_plot.refresh()

        rel = self.query_one("#reliability", PlotextPlot)
        plt = rel.plt
        plt.clear_data()
        plt.clear_figure()
        r = latest.get("reliability")
        if r:
            plt.title(f"ECE {latest.get('ece', 0):.3f}: ● bins · ideal")
            xs = [c for c, n in zip(r["bin_confidence"], r["bin_counts"]) if n]
            ys = [a for a, n in zip(r["bin_accuracy"], r["bin_counts"]) if n]
            plt.plot([0, 1], [0, 1], marker="·")
            plt.scatter(xs, ys, marker="●")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
            plt.xlabel("confidence")
        else:
            plt.title("Reliability: no model yet")
        rel.refresh()
        rec = self.query_one("#recall", PlotextPlot)
        plt = rec.plt
        plt.clear_data()
        plt.clear_figure()
        pc = latest.get("per_class") or {}
        if pc:
            plt.title("Recall per class")
            plt.bar(
                [safe_line(c, 12) for c in pc], [v["recall"] for v in pc.values()], orientation="horizontal", width=0.4
            )
            plt.xticks([0, 0.25, 0.5, 0.75, 1.0])
        else:
            plt.title("Per-class recall: no model yet")
        rec.refresh()
        self.query_one("#numbers", Static).update(self._numbers(snap, pts))

    def _numbers(self, snap: dict, arm_points: list) -> Text:
        """The metrics pane's numbers: the latest model, AL against random, agreement, warnings.

        Long because each figure is one line of the pane, in the pane's order.
        """
        t = Text()
        latest = snap.get("latest") or {}
        if latest:
            t.append(f"Model v{latest['version']}", style="bold")
            if latest.get("n_test"):
                base = latest.get("majority_baseline")
                t.append(
                    f"  acc {latest['accuracy']:.3f}"
                    + (f" (majority {base:.3f})" if base is not None else "")
                    + f"  macro-F1 {latest['macro_f1']:.3f}\n"
                    f"ECE {latest['ece']:.3f} (raw {latest.get('ece_uncalibrated') or 0:.3f})  "
                    f"Brier {latest.get('brier') or 0:.3f}  NLL {latest.get('nll') or 0:.3f}\n"
                )
            if isinstance(latest.get("features"), dict):
                from labelloop.core.text.status import describe

                t.append(safe_line(describe(latest["features"]), None) + "\n", style="dim")
            if isinstance(latest.get("bandit"), dict):
                from labelloop.core.text.status import bandit_line

                t.append(safe_line(bandit_line(latest["bandit"]), None) + "\n", style="dim")
        else:
            t.append("No model yet.\n", style="bold")
        t.append("\nLabels\n", style="bold")
        dist = snap["distribution"]
        top = max(dist.values(), default=0)
        for k, v in dist.items():  # a bar per label, scaled to the most frequent
            t.append(f"  {safe_line(k, 10):<10} ")
            t.append("█" * max(1, round(12 * v / top)), style="cyan")
            t.append(f" {v}\n")
        if not dist:
            t.append("  none\n")
        t.append("Throughput: ", style="bold")
        t.append(
            ", ".join(
                f"{safe_line(a['actor'], 12)} {a['decisions']} ({a['last_hour']} last hour)" for a in snap["throughput"]
            )
            or "none"
        )
        counts = snap.get("arms") or {}
        if counts:
            t.append("\nDecisions by arm: ", style="bold")
            t.append(
                f"AL {counts['al']}, random audit {counts['audit']}, cold start {counts['cold_start']}"
                f" (audit {counts['audit_share']:.0%} of {counts['total']})"
            )
        if snap["corrections"]:
            t.append("\nCorrections: ", style="bold")
            t.append(", ".join(f"{safe_line(k, 24)} {v}" for k, v in snap["corrections"].items()))
        if snap.get("anchoring"):
            t.append("\nAgree with model: ", style="bold")
            t.append(", ".join(f"{k} {v['agree_with_model']:.0%} (n={v['n']})" for k, v in snap["anchoring"].items()))
        ag = snap.get("agreement")
        if ag and ag.get("n_items_overlap"):
            from labelloop.core.text.status import agreement_lines

            t.append("\n" + "\n".join(safe_line(x, None) for x in agreement_lines(ag)[1:]))
            worst = sorted(
                (
                    (a, r["agree_with_others"])
                    for a, r in ag["per_annotator"].items()
                    if r["agree_with_others"]["value"] is not None
                ),
                key=lambda x: x[1]["value"],
            )
            if worst:
                t.append(
                    "\n  per annotator (agreement with the others): "
                    + ", ".join(
                        f"{safe_line(a, 12)} {r['value']:.2f}"
                        + (f" [{r['low']:.2f}, {r['high']:.2f}]" if r["low"] is not None else "")
                        for a, r in worst[:4]
                    )
                )
            per_class = [(c, r["fleiss_kappa"]) for c, r in ag["per_class"].items()]
            if per_class:
                t.append(
                    "\n  per class (kappa): "
                    + ", ".join(
                        f"{safe_line(c, 12)} "
                        + (
                            f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"
                            if r["value"] is not None and r["low"] is not None
                            else f"{r['value']:.2f}"
                            if r["value"] is not None
                            else "undefined"
                        )
                        for c, r in per_class[:6]
                    )
                )
        t.append("\nAL vs random audit at equal budget (95% bootstrap bands over test items):", style="bold")
        for p in arm_points:
            t.append(
                f"\n  {p['labels_each']} labels each: AL {p['al']:.3f} [{p['al_low']:.3f}, {p['al_high']:.3f}], "
                f"random {p['random']:.3f} [{p['random_low']:.3f}, {p['random_high']:.3f}], "
                f"AL - random {p['diff']:+.3f} [{p['diff_low']:+.3f}, {p['diff_high']:+.3f}]"
            )
        if not arm_points:
            t.append("\n  not enough random-audit labels yet", style="dim")
        t.append("\n\nWarnings\n", style="bold")
        for w in snap["warnings"] or ["none"]:
            t.append(f"• {w}\n", style="yellow" if w != "none" else "")
        return t

    def action_close(self) -> None:
        self.dismiss()
