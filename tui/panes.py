"""The labelling screen's panes as text: what each shows for an item (no widgets, no state)."""

from __future__ import annotations

from rich.text import Text

from labelloop.core.api.workspace import QueueItem
from labelloop.tui.safe_text import safe_line

BAR_WIDTH = 20


def waiting_text(ws, retraining: bool) -> str:
    """What the text pane says while no item is on screen."""
    if ws.paused:
        return ws.paused
    others = f" ({ws.others} others are working.)" if ws.others else ""
    if ws.batch is None and (retraining or ws.retraining):
        job = ws.job or {}
        step = f": {job['step']}" if job.get("step") else ""
        return (
            f"Preparing the first batch… {job.get('fraction', 0.0):.0%}{step}. Keys pressed before the first "
            "item shows do nothing (a notice says so)." + others
        )
    if retraining:
        return "No items for you in the queue. A new batch is being prepared…" + others
    return "No items for you in the queue. Press t to retrain and fill it." + others


def meta_text(item: QueueItem) -> Text:
    t = Text()
    t.append("id ", style="dim")
    t.append(safe_line(item.item_id, 40))
    for k, v in list(item.metadata.items())[:6]:
        t.append(f"   {safe_line(k, 20)} ", style="dim")
        t.append(safe_line(v, 40))
    return t


def suggestion_text(item: QueueItem, pane_width: int) -> Text:
    """The model's suggestion with probability bars that fit ``pane_width`` columns."""
    t = Text()
    if item.suggestion_hidden:
        t.append("Suggestion hidden", style="bold")
        t.append("\n(blind item: your label measures anchoring)", style="dim")
        return t
    if not item.probs and item.review_note:
        # sent back: its queue row is from before any model scored it (a model may exist by now)
        t.append("No suggestion", style="bold")
        t.append("\nqueued before a model scored it; label from the text and the reviewer's note", style="dim")
        return t
    if not item.probs:
        t.append("No model yet", style="bold")
        t.append("\nlabel from the text alone (cold start)", style="dim")
        return t
    t.append(f"Model v{item.model_version} suggests\n", style="dim")
    ranked = sorted(item.probs.items(), key=lambda kv: -kv[1])[:5]
    width = min(16, max(len(k) for k, _ in ranked))
    bar = max(4, min(BAR_WIDTH, pane_width - width - 8))  # label, bar and percentage on one line
    for i, (lab, p) in enumerate(ranked):
        filled = int(round(p * bar))
        t.append(f"{safe_line(lab, width):<{width}} ", style="bold" if i == 0 else "")
        t.append("█" * filled, style="green" if i == 0 else "blue")
        t.append("░" * (bar - filled), style="dim")
        t.append(f" {p:5.1%}\n")
    return t


def why_text(item: QueueItem) -> Text:
    t = Text()
    if item.score is not None and not item.audit:
        t.append("uncertainty ", style="dim")
        t.append(f"{item.score:.3f}\n")
    t.append("why: ", style="dim")
    t.append(safe_line(item.why, None))  # a reviewer's reason is text from a person
    return t


def labelbar_text(config, item: QueueItem | None, toggled: list[str]) -> Text:
    t = Text()
    multi = config.multi_label
    for lab, key in config.label_keys.items():
        on_ = lab in toggled
        t.append(f" {key} ", style="reverse bold" if on_ else "reverse")
        t.append(f" {safe_line(lab, 24)}  ", style="bold" if on_ else "")
    if item and item.suggestion and not item.suggestion_hidden:
        t.append("  Enter", style="reverse")
        t.append(f" accept {safe_line(item.suggestion, 20)}" if not (multi and toggled) else " confirm")
    elif multi:
        t.append("  Enter", style="reverse")
        t.append(" confirm toggled labels")
    return t


def fit_summary(summary: str | None, width: int) -> str:
    """ "Is AL working? ..." in ``width`` columns: whole phrases (the parts between " · ") from the left,
    and "… m" when some did not fit (the metrics pane, m, has them all); never cut mid-phrase."""
    head = "Is AL working? "
    parts = (summary or "–").split(" · ")
    shown: list[str] = []
    for part in parts:
        more = len(shown) + 1 < len(parts)
        fits = [
            p
            for p in (part, part.split(" (")[0])
            if len(head + " · ".join([*shown, p]) + (" · … m" if more else "")) <= width
        ]
        if not fits:  # (a phrase's parenthesis, e.g. which warnings, goes first)
            break
        shown.append(fits[0])
    text = head + " · ".join(shown)
    if len(shown) < len(parts):
        text += (" · " if shown else "") + "… m"
    return text
