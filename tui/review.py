"""``labelloop review DIR``: the reviewer's screen (issue: agreement and review).

The queue of items to adjudicate (annotators disagree, agree against a confident model, or flagged
it) with counts; for the item in front: every version side by side (who, label, how, reason, note,
time, whether the model's suggestion was shown), the model's calibrated view, the guidelines on `?`.
A letter picks a version's label, a digit chooses a label; then an optional rationale (Enter) and
the adjudication is stored. `u` takes back the latest adjudication or send-back (again and again),
`n` moves on without deciding, `z` sends the item back to its annotators with a reason. Over the
project's server for a team (every call on the link's thread, never on the one that draws), in-process
for one person; only reviewers and admins may open it. A client of the project API only.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Footer, Header, Static

from labelloop.core.api.client import connect
from labelloop.core.api.workspace import new_msg_id
from labelloop.core.config import parse_config
from labelloop.core.util.errors import LabelloopError, StoreError
from labelloop.tui.link import Link, link_line
from labelloop.tui.safe_text import safe_line, safe_text
from labelloop.tui.screens import HelpScreen, NoteScreen

LETTERS = "abcdefgh"


class ReviewApp(App):
    CSS_PATH = "app.tcss"
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
    KEYS_HELP = [
        ("a-h", "take that version's label (then an optional rationale; Enter stores it)"),
        ("label key", "choose that label yourself (then an optional rationale)"),
        ("n", "next item, without deciding this one"),
        ("z", "send the item back to its annotators, with a reason they will see"),
        ("u", "undo your latest adjudication or send-back (again and again)"),
        ("?", "this help"),
        ("q", "quit (every decision is already saved)"),
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
        self.view: dict | None = None
        self.versions: list[dict] = []
        self.decided = 0
        self.sub_title = f"{safe_line(self.config.name, 40)} · {safe_line(self.actor, 24)}"
        self._apply(self._fetch())  # refuses annotators before the screen opens
        gold = self.client.call("status").get("gold") or {}
        self.below = {a: g for a, g in gold.items() if g["below_threshold"]}
        # over the socket, every call after this one runs on the link's thread
        self.link = Link(self, threaded=getattr(self.client, "transport", "") == "socket")
        if self.link.threaded and hasattr(self.client, "reconnect_seconds"):
            self.client.reconnect_seconds = 0  # the link retries, and says so on screen

    # -- the queue and the item in front ----------------------------------------------------------
    def _fetch(self, first: str | None = None) -> tuple[dict, dict | None]:
        """The review queue and the versions of the item in front (``first``, when it is waiting)."""
        q = self.client.call("review_queue")
        items = [i for i in q["items"] if i["item_id"] not in self.passed]
        if first is not None:
            items.sort(key=lambda i: i["item_id"] != first)
        q = {**q, "items": items}
        view = self.client.call("review_item", item_id=items[0]["item_id"]) if items else None
        return q, view

    def _apply(self, fetched: tuple[dict, dict | None]) -> None:
        q, self.view = fetched
        self.queue, self.counts = q["items"], q["counts"]
        self.current = self.queue[0] if self.queue else None
        self.versions = [e for e in self.view["events"] if e["kind"] == "label"] if self.view else []

    def reload(self, first: str | None = None) -> None:
        self.link.submit(lambda: self._fetch(first), self._shown, self._failed)

    def _shown(self, fetched) -> None:
        self._apply(fetched)
        self.show()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="queue", markup=False)
        with Horizontal():
            with VerticalScroll(id="item"):
                yield Static("", id="text", markup=False)
            with VerticalScroll(id="versions"):
                yield Static("", id="detail", markup=False)
        yield Static("", id="link", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.show()
        self.set_interval(0.25, self._show_link)

    def _show_link(self) -> None:
        line = link_line(self.link)
        widget = self.query_one("#link", Static)
        widget.display = line is not None
        if line is not None:
            widget.update(line)

    def show(self) -> None:
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
        if self.current is None or self.view is None:
            self.query_one("#text", Static).update(Text("Nothing waits for review.", style="italic"))
            self.query_one("#detail", Static).update("")
            return
        self.query_one("#text", Static).update(safe_text(self.view["text"]))
        self.query_one("#detail", Static).update(self._detail(self.view))

    def _detail(self, view: dict) -> Text:
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
        return t

    # -- decisions --------------------------------------------------------------------------------
    def _holding(self) -> bool:
        if not self.link.held:
            return False
        self.notify("Your last decision is held until the server answers; it is sent then, once.", timeout=3)
        return True

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
        if self._holding():
            return
        item = self.current

        def done(rationale) -> None:
            if rationale is None:
                return
            self._record("adjudicate", item_id=item["item_id"], labels=labels, rationale=rationale or None)

        self.push_screen(
            NoteScreen(
                f"Final label: {' | '.join(labels)}",
                "Rationale for the record (optional). Enter stores it, Escape cancels.",
                compact=True,
            ),
            done,
        )

    def _record(self, op: str, **args) -> None:
        """Store one review decision (its message id fixed now, so a resend counts once), then the next
        item. A store failure ends the session (exit 3); any other refusal is shown and changes nothing."""
        msg_id = new_msg_id()

        def stored(_answer) -> None:
            self.decided += 1
            self.reload()

        self.link.submit(lambda: self.client.call(op, msg_id=msg_id, **args), stored, self._failed, decision=True)

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, StoreError):
            self.notify(safe_line(str(exc), None), severity="error", markup=False)
            self.exit(return_code=3)
        elif isinstance(exc, LabelloopError):
            self.notify(safe_line(str(exc), None), severity="warning", markup=False)
        else:
            raise exc

    def action_skip(self) -> None:
        if self.current is not None:
            self.passed.add(self.current["item_id"])
            self.reload()

    def action_send_back(self) -> None:
        item = self.current
        if item is None or self._holding():
            return

        def done(reason) -> None:
            if not reason:
                if reason == "":
                    self.notify("Say why it goes back (the annotators will see it).", severity="warning", timeout=3)
                return
            self._record("send_back", item_id=item["item_id"], reason=reason)

        self.push_screen(
            NoteScreen(
                "Send back to the annotators",
                "Why? They will see it with the item. Enter sends, Escape cancels.",
                compact=True,
            ),
            done,
        )

    def action_undo(self) -> None:
        if self._holding():
            return
        msg_id = new_msg_id()
        self.link.submit(
            lambda: self.client.call("undo_adjudication", msg_id=msg_id), self._undone, self._failed, decision=True
        )

    def _undone(self, r: dict) -> None:
        if r["undone"] is None:
            self.notify("Nothing to undo.", timeout=2)
            return
        self.decided = max(0, self.decided - 1)
        self.passed.discard(r["undone"])
        what = "send-back" if r.get("what") == "send_back" else "adjudication"
        self.notify(f"Undone ({what}): {safe_line(r['undone'], 30)} is back.", markup=False, timeout=2)
        self.reload(first=r["undone"])  # the item taken back comes first

    def action_help(self) -> None:
        self.link.submit(
            lambda: self.client.call("guidelines")["text"],
            lambda text: self.push_screen(HelpScreen(self.config, text, keys=self.KEYS_HELP)),
            self._failed,
        )

    def on_unmount(self) -> None:
        self.link.close(wait=2.0)
        if self._own:
            self.client.close()


def run_review(project_dir: Path) -> int:
    app = ReviewApp(project_dir)
    app.run()
    return app.return_code or 0
