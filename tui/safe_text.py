"""Showing text from data files as text: never markup, never terminal control sequences (core/util/textsafe.py).

Item texts go through ``safe_text`` into a ``rich.text.Text`` (which Textual
draws literally: ``[bold]`` stays ``[bold]``). Control characters, including the
ESC that starts ANSI/VT sequences, become visible symbols; bidirectional
override and isolate characters (which could reorder what the annotator reads)
are shown as their code points. Very long texts are cut for display, with a
note saying so; what is stored is never changed.
"""

from __future__ import annotations

import re

from rich.text import Text

from labelloop.core.util.textsafe import clean, safe_line  # noqa: F401  (the one sanitiser, shared with the CLI)

DISPLAY_LIMIT = 20_000


def safe_text(s: str, *, limit: int = DISPLAY_LIMIT, highlight: str | None = None, style: str = "") -> Text:
    """A Text to display ``s`` literally, cut at ``limit`` characters."""
    cut = len(s) > limit
    shown = clean(s[:limit] if cut else s)
    text = Text(shown, style=style, no_wrap=False, overflow="fold")
    if highlight:
        try:
            text.highlight_regex(re.compile(highlight, re.IGNORECASE), "bold reverse")
        except re.error:
            pass
    if cut:
        text.append(f"\n\n… shown: the first {limit:,} of {len(s):,} characters.", style="italic dim")
    return text
