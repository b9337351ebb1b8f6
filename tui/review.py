"""``labelloop review DIR``: the reviewer's screen (issue: agreement and review).

The queue of items to adjudicate (annotators disagree, agree against a confident model, or flagged
it) with counts; for the item in front: every version side by side (who, label, how, reason, note,
time, whether the model's suggestion was shown), the model's calibrated view, the guidelines on `?`.
A letter picks a version's label, a digit chooses a label; then an optional rationale (Enter) and
the adjudication is stored. `u` takes back the latest adjudication (again and again), `n` moves on
without deciding, `z` sends the item back to its annotators with a reason. Over the project's server for a team, in-process for one person; only reviewers
and admins may open it. A client of the project API only.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Static

from labelloop.core.api.client import connect
from labelloop.core.config import parse_config
from labelloop.core.util.errors import LabelloopError, StoreError
from labelloop.tui.safe_text import safe_line, safe_text
from labelloop.tui.screens import HelpScreen, NoteScreen

LETTERS = "abcdefgh"


class ReviewApp(App):
    CSS = """
    #versions { width: 60%; border: round $accent; padding: 0 1; }
    #item { border: round $primary; padding: 0 1; }
    #queue { height: 1; }
    """
    TITLE = "labelloop review"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("n", "skip", "Next"),
        Binding("u", "undo", "Undo"),
        Binding("z", "send_back", "Send back"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, project_dir: Path | str, *, actor: str | None = None, client=None):
        super().__init__()
        self.client = client or connect(project_dir, actor=actor, compute="thread")
        self._own = client is None
        hello = self.client.call("open_session", client="review")
        import tomllib

        self.config = parse_config(tomllib.loads(hello["config_toml"]), Path(hello["config_path"]))
        self.actor = hello["actor"]
        self.queue: list[dict] = []
        self.counts: dict = {}
        self.passed: set[str] = set()  # moved on from without deciding (this session)
        self.current: dict | None = None
        self.versions: list[dict] = []
        self.decided = 0
        self.sub_title = f"{safe_line(self.config.name, 40)} · {safe_line(self.actor, 24)}"
        self.load_queue()  # refuses annotators before the screen opens
        gold = self.client.call("status").get("gold") or {}
        self.below = {a: g for a, g in gold.items() if g["below_threshold"]}

    def load_queue(self) -> None:
        q = self.client.call("review_queue")
        self.queue = [i for i in q["items"] if i["item_id"] not in self.passed]
        self.counts = q["counts"]

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="queue", markup=False)
        with Horizontal():
            with VerticalScroll(id="item"):
                yield Static("", id="text", markup=False)
            with VerticalScroll(id="versions"):
                yield Static("", id="detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.show()

    def show(self) -> None:
        self.current = self.queue[0] if self.queue else None
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items()) or "nothing"
        below = "".join(
            f" · gold: {safe_line(a, 16)} {g['accuracy']:.2f} (n={g['n']}) below threshold"
            for a, g in sorted(self.below.items())
        )
        self.query_one("#queue", Static).update(
            Text(
                f" {len(self.queue)} to review"
                + (f", {len(self.passed)} passed over" if self.passed else "")
                + f" (waiting in all: {counts}) · {self.decided} decided this session{below}",
                style="bold",
            )
        )
        if self.current is None:
            self.versions = []
            self.query_one("#text", Static).update(Text("Nothing waits for review.", style="italic"))
            self.query_one("#detail", Static).update("")
            return
        view = self.client.call("review_item", item_id=self.current["item_id"])
        self.versions = [e for e in view["events"] if e["kind"] == "label"]
        self.query_one("#text", Static).update(safe_text(view["text"]))
        t = Text()
        t.append("why here: ", style="dim")
        t.append(", ".join(safe_line(r, 60) for r in self.current["reasons"]) + "\n\n")
        for letter, v in zip(LETTERS, self.versions):
            t.append(f" {letter} ", style="reverse")
            t.append(f" {safe_line(v['labels'], 30)}", style="bold")
            t.append(f"  by {safe_line(v['actor'], 16)} ({safe_line(v['via'] or '', 12)})\n")
            shown = (
                "suggestion hidden"
                if v["suggestion_hidden"]
                else (f"saw suggestion {safe_line(v['suggestion'], 20)}" if v["suggestion"] else "no suggestion")
            )
            t.append(f"     {shown}; {safe_line((v['ts'] or '')[:19], 19)}", style="dim")
            if v["error_category"]:
                t.append(f"; reason {safe_line(v['error_category'], 30)}", style="dim")
            if v["note"]:
                t.append(f"; note {safe_line(v['note'], 60)}", style="dim")
            t.append("\n")
        for e in view["events"]:
            if e["kind"] in ("flag", "skip"):
                t.append(f" {e['kind']} by {safe_line(e['actor'], 16)}", style="yellow")
                t.append(f": {safe_line(e['note'], 60)}\n" if e["note"] else "\n")
        probs = view.get("model_probs") or {}
        if probs:
            t.append(f"\nModel v{view.get('model_version')} (calibrated, when queued)\n", style="dim")
            for lab, p in sorted(probs.items(), key=lambda kv: -kv[1])[:5]:
                t.append(f"  {safe_line(lab, 16):<16} {p:6.1%}\n")
        t.append("\nLetter: take that version · ", style="dim")
        t.append(" · ".join(f"{k} {safe_line(lab, 16)}" for lab, k in self.config.label_keys.items()), style="dim")
        self.query_one("#detail", Static).update(t)

    def on_key(self, event) -> None:
        if self.screen is not self.screen_stack[0] or self.current is None:
            return
        key = event.key
        labels = None
        if key in LETTERS[: len(self.versions)]:
            labels = self.versions[LETTERS.index(key)]["labels"].split("|")
        else:
            by_key = {k: lab for lab, k in self.config.label_keys.items()}
            if key in by_key:
                labels = [by_key[key]]
        if labels is None:
            return
        event.stop()
        event.prevent_default()
        item = self.current

        def done(rationale) -> None:
            if rationale is None:
                return
            self._record("adjudicate", item_id=item["item_id"], labels=labels, rationale=rationale or None)

        self.push_screen(
            NoteScreen(
                f"Final label: {' | '.join(labels)}",
                "Rationale for the record (optional). Enter stores it, Escape cancels.",
            ),
            done,
        )

    def _record(self, op: str, **args) -> None:
        """Store one review decision (a fresh message id, so a resend counts once), then the next item.
        A store failure ends the session (exit 3); any other refusal is shown and changes nothing."""
        try:
            self.client.call(op, msg_id=uuid.uuid4().hex, **args)
        except StoreError as exc:
            self.notify(safe_line(str(exc), None), severity="error", markup=False)
            self.exit(return_code=3)
            return
        except LabelloopError as exc:
            self.notify(safe_line(str(exc), None), severity="warning", markup=False)
            return
        self.decided += 1
        self.load_queue()
        self.show()

    def action_skip(self) -> None:
        if self.current is not None:
            self.passed.add(self.current["item_id"])
            self.load_queue()
            self.show()

    def action_send_back(self) -> None:
        item = self.current
        if item is None:
            return

        def done(reason) -> None:
            if not reason:
                if reason == "":
                    self.notify("Say why it goes back (the annotators will see it).", severity="warning", timeout=3)
                return
            self._record("send_back", item_id=item["item_id"], reason=reason)

        self.push_screen(
            NoteScreen(
                "Send back to the annotators", "Why? They will see it with the item. Enter sends, Escape cancels."
            ),
            done,
        )

    def action_undo(self) -> None:
        r = self.client.call("undo_adjudication", msg_id=uuid.uuid4().hex)
        if r["undone"] is None:
            self.notify("Nothing to undo.", timeout=2)
            return
        self.decided = max(0, self.decided - 1)
        self.passed.discard(r["undone"])
        self.load_queue()
        # the item taken back comes first
        self.queue.sort(key=lambda i: i["item_id"] != r["undone"])
        self.notify(f"Undone: {safe_line(r['undone'], 30)} is back.", markup=False, timeout=2)
        self.show()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.config, self.client.call("guidelines")["text"]))

    def on_unmount(self) -> None:
        if self._own:
            self.client.close()


def run_review(project_dir: Path) -> int:
    app = ReviewApp(project_dir)
    app.run()
    return app.return_code or 0
